import os

import pytest

from masklab import kernel


@pytest.fixture(scope="session", autouse=True)
def masklab_kernel(tmp_path_factory):
    """The notebooks name the ``masklab`` kernel and run in it. Its kernelspec is written here by the code that
    ``make install`` runs (``masklab.kernel.install``), into a temporary folder put first on ``JUPYTER_PATH``: the
    tests run this checkout's kernel on this Python whether or not ``make install`` ran, and write nothing into the
    environment."""
    prefix = tmp_path_factory.mktemp("jupyter")
    kernel.install(prefix)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(prefix / "share" / "jupyter"),
                                                                   os.environ.get("JUPYTER_PATH")])))
        yield kernel.check_installed()
