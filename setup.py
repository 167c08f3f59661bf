"""Build hook: a wheel carries the shipped graphs and calibrations inside the package.

The project keeps them at the top level (``graphs/``, ``data/calibration/``: its declared layout); a wheel
copies them to ``kgzsl/_shipped/`` so that an installed kgzsl, run from any folder, finds them
(:func:`kgzsl.core.resources.shipped_path`). An editable install reads them where they are.
Everything else about the package is in ``pyproject.toml``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: project folder -> folder under kgzsl/_shipped in the wheel
SHIPPED = {"graphs/imagenet21k": "graphs/imagenet21k", "graphs/birds": "graphs/birds",
           "data/calibration": "data/calibration", "data/taxonomies": "data/taxonomies"}


class BuildWithShippedData(build_py):
    """``build_py`` that also copies the shipped graphs and calibrations into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads graphs/ and data/ from the checkout
        root = Path(__file__).resolve().parent
        for source, target in SHIPPED.items():
            destination = Path(self.build_lib) / "kgzsl" / "_shipped" / target
            if destination.exists():
                shutil.rmtree(destination)
            shutil.copytree(root / source, destination)


setup(cmdclass={"build_py": BuildWithShippedData})
