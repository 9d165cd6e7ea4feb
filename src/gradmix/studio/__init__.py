"""``gradmix studio``: a local web page to hear, compare and tweak a mix, and hand it over to a DAW.

:class:`Session` holds the song and the versions of its console; :class:`Studio` serves the page
(``static/``) and the JSON API over it. The server needs the ``studio`` extra (Starlette, uvicorn).
"""

from gradmix.defaults import DEVICE, STUDIO_HOST, STUDIO_PORT
from gradmix.studio.session import Session

__all__ = ["Session", "Studio", "run_studio"]


def __getattr__(name: str):
    if name == "Studio":
        from gradmix.studio.server import Studio

        return Studio
    raise AttributeError(name)


def run_studio(
    stems_dir,
    *,
    console=None,
    out_dir=None,
    model_path=None,
    host: str = STUDIO_HOST,
    port: int = STUDIO_PORT,
    strict: bool = False,
    open_browser: bool = False,
    device=DEVICE,
) -> None:
    """Load the song (the model and the console compute on ``device``), print the address (and the token on a
    non-loopback host), serve until Ctrl-C."""
    from pathlib import Path

    from gradmix.errors import GradmixError

    try:
        from gradmix.studio.server import Studio
    except ImportError as exc:
        raise GradmixError(
            f"gradmix studio needs the studio extra: pip install 'gradmix[studio]' ({exc.name} is missing)"
        ) from None
    stems = Path(stems_dir)
    out = Path(out_dir) if out_dir is not None else stems.resolve().parent / f"{stems.resolve().name}.studio"
    print(f"loading {stems} and mixing…", flush=True)
    session = Session(stems, out, console=console, model_path=model_path, strict=strict, progress=True, device=device)
    studio = Studio(session, host=host, port=port)
    print(
        f"gradmix studio: {studio.url}  ({len(session.names)} tracks; saves go to {session.out_dir}; Ctrl-C stops)",
        flush=True,
    )
    if studio.token:
        print(f"this studio listens on {host}: open it with the token above ({studio.token})", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(studio.url)
    try:
        studio.serve_forever()
    except KeyboardInterrupt:  # uvicorn has shut down gracefully, then re-raises the signal
        pass
    print("gradmix studio stopped", flush=True)
