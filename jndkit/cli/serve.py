"""``jndkit serve``: options -> :class:`~jndkit.serve.ServeSettings` -> :func:`~jndkit.serve.create_app`,
served by uvicorn on a socket bound here first (so a taken port is one clear line, exit 2, before
the URL is printed)."""

from __future__ import annotations

import ipaddress
import socket

import typer

from .common import err, fail, warn

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free port).

    Raises:
        OSError: the address cannot be bound (port taken, unknown host).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to listen on (default 127.0.0.1: this computer only)."),
    port: int = typer.Option(8765, "--port", help="TCP port (0: any free port)."),
    max_upload_mb: float = typer.Option(50.0, "--max-upload-mb", help="Largest photo accepted, in MB."),
    workers: int = typer.Option(1, "--workers", help="Photos protected at once (each uses every core)."),
) -> None:
    """Protect photos from a browser: a local web page (drop photos or a folder, pick the task and
    strength, compare, download).

    Photos stay on this machine, in a temporary folder deleted when the server stops (Ctrl-C)."""
    if not 0 <= port <= 65535:
        fail(f"--port must be in 0..65535, got {port}")
    if max_upload_mb <= 0:
        fail(f"--max-upload-mb must be > 0, got {max_upload_mb:g}")
    if workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    try:
        import uvicorn

        from ..serve import ServeSettings, create_app
    except ImportError as e:  # pragma: no cover - declared dependencies
        fail(f"jndkit serve needs FastAPI and uvicorn ({e}); reinstall jndkit (make demo)")
    try:
        sock = bind(host, port)
    except OSError as e:
        fail(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port")
    local = is_loopback(host)
    if not local:
        warn(f"listening on {host}: anyone who can reach this address can upload photos to this computer")
    bound = sock.getsockname()[1]
    url_host = f"[{host.strip('[]')}]" if ":" in host else host
    settings = ServeSettings(max_upload_mb=max_upload_mb, workers=workers,
                             allowed_hosts=[*LOOPBACK_NAMES, host] if local else None)
    app = create_app(settings)
    err.print(f"jndkit serve: open http://{url_host}:{bound}/ in a browser (Ctrl-C stops it and deletes "
              f"the uploaded photos: {app.state.session.root})", highlight=False)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C before uvicorn had installed its own handler: the same stop
        pass
    finally:
        app.state.session.close()
        sock.close()
    err.print("jndkit serve: stopped; uploaded photos deleted", highlight=False)
