"""The kernel managers coursekit and the test suite start kernels with: unix sockets, no TCP ports.

jupyter_client's default transport (tcp) picks a kernel's five ports by binding port 0 on 127.0.0.1
and closing the socket; the kernel binds those ports a moment later. In between, any outgoing
connection on the machine may be given the same ephemeral port, and the kernel dies with `ZMQError:
Address already in use` (jupyter_client issue 487; its LocalPortCache only keeps two kernels of ONE
process apart). A busy test run (4 workers, thousands of HTTP requests on 127.0.0.1) hit it.

zmq's ipc transport binds socket files instead: `<connection file>-ipc-1` ... `-5`, next to the
connection file in Jupyter's runtime folder (mode 0700), a name no other kernel uses: nothing to race
for. jupyter_client supports it (`KernelManager.transport = "ipc"`), but with its default, empty
`connection_file` it names the sockets `kernel-ipc-N` RELATIVE to each process's working folder (the
manager's and the kernel's differ), so the connection file gets an absolute name here.

A socket's path must fit sockaddr_un (108 bytes on Linux, 104 on macOS): where the runtime folder is
too deep for that, and where unix sockets are not POSIX (Windows), the kernel keeps tcp. JupyterLab
starts learners' kernels with its own managers: this changes nothing there.

These kernels also start without ipykernel's debugger (coursekit/kernel_launcher.py says why).
"""

from __future__ import annotations

import os
import secrets
import sys

from jupyter_client.manager import AsyncKernelManager, KernelManager
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import default

SOCKET_PATH_MAX = 100  # below both systems' sun_path (108 Linux, 104 macOS), with its NUL


class UnixSocketKernelManager(KernelManager):
    """jupyter_client's KernelManager (nbval's) on unix sockets."""

    @default("connection_file")
    def _connection_file_in_runtime_dir(self) -> str:
        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        # short (the sockets' path budget), random (no kernel of another process or worker shares it)
        return os.path.join(runtime, f"kernel-{secrets.token_hex(8)}.json")

    @default("transport")
    def _unix_sockets_where_they_fit(self) -> str:
        longest = os.path.splitext(self.connection_file)[0] + "-ipc-99"
        return "ipc" if os.name == "posix" and len(os.fsencode(longest)) <= SOCKET_PATH_MAX else "tcp"

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        command = super().format_kernel_cmd(extra_arguments)
        # ipykernel's own kernel on this Python: the same launcher, without the debugger's imports
        if command[:3] == [sys.executable, "-m", "ipykernel_launcher"]:
            command[1:3] = ["-m", "coursekit.kernel_launcher"]
        return command


class AsyncUnixSocketKernelManager(UnixSocketKernelManager, AsyncKernelManager):
    """jupyter_client's AsyncKernelManager (nbclient's) on unix sockets."""
