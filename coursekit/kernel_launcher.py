"""What the kernels coursekit and the test suite start run: ipykernel's own launcher
(`python -m ipykernel_launcher`, which this mirrors), without ipykernel's debugger.

ipykernel imports debugpy and its pydevd at every kernel start, to offer a front-end its visual
debugger: about 0.1 s of CPU of a start's ~0.4 s (measured 0.38 -> 0.27 s per start, and 2.0 ->
1.4 s to ready under load), hundreds of times a test run, for a debugger no one attaches to:
nbval, the corpus, `course check`, `course grade` and `course record` only run cells. With debugpy
unimportable, ipykernel leaves its debugger out (its `_is_debugpy_available` is False: kernel_info
no longer lists "debugger") and the kernel is otherwise the same. Learners' kernels in JupyterLab
are started by JupyterLab, with the debugger (coursekit/kernels.py chooses this launcher only
where the kernel is ipykernel's own on this Python).
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # as ipykernel_launcher: the working folder off sys.path while ipykernel loads (IPython puts it back)
    if sys.path[0] == "" or Path(sys.path[0]) == Path.cwd():
        del sys.path[0]
    sys.modules["debugpy"] = None  # `import debugpy` raises ImportError: ipykernel starts without its debugger

    from ipykernel import kernelapp

    kernelapp.launch_new_instance()
