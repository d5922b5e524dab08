"""Only what pyproject.toml cannot say: copy the shipped files into the wheel.

The web pages, example flows, dialplans and example configurations live at the top of
the source tree (ctiserver/shipped.py lists them). A wheel installs packages only, so
the build copies them into ctiserver/shipped/ of the wheel, where shipped_path finds
them. An editable install reads them where they are.
"""

import runpy
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

TOP = Path(__file__).resolve().parent
# The module alone, by path: the package's imports need its dependencies installed.
SHIPPED = runpy.run_path(str(TOP / "ctiserver" / "shipped.py"))["SHIPPED"]


class BuildWithShippedFiles(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads them in the source tree
        target = Path(self.build_lib) / "ctiserver" / "shipped"
        for name in SHIPPED:
            source = TOP / name
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True)
            elif source.is_file():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
            else:
                raise FileNotFoundError(f"{source} is missing: a wheel without it is broken")


setup(cmdclass={"build_py": BuildWithShippedFiles})
