"""The runtime's errors: one line for the user, with the exit code edgec's DESIGN assigns
(2: usage, a damaged artifact or an artifact that cannot run here; 3: a model the backend
refuses). ``edgec`` turns them into its own diagnostics; ``python3 -m edgec_runtime``
prints them as they are."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """A problem the user can act on. ``path`` is the file or folder it is about."""

    exit_code = 2

    def __init__(self, message: str, path: str | None = None, *, exit_code: int | None = None,
                 notes: tuple[str, ...] | list[str] = ()):
        self.message = " ".join(str(message).split()) or type(self).__name__
        self.path = path
        self.notes = tuple(notes)
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__(self.render())

    def render(self) -> str:
        head = f"error: {self.message}"
        if self.path:
            head = f"{self.path}: {head}"
        return "\n".join([head, *(f"note: {n}" for n in self.notes)])


class ArtifactError(RuntimeFailure):
    """The artifact folder is damaged, tampered with, or not an artifact (exit 2)."""


class NotRunnableHere(RuntimeFailure):
    """The artifact is sound but this machine cannot run it (exit 2)."""


class InputError(RuntimeFailure):
    """The inputs given to run or bench are unusable (exit 2)."""


class ModelLoadError(RuntimeFailure):
    """The backend runtime refuses the artifact's model or module (exit 2: the artifact,
    as shipped, cannot be loaded here)."""
