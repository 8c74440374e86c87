"""User-facing errors: the CLI prints their message (what was wrong, and the fix) without a traceback."""


class Interrupted(Exception):
    """A run stopped by SIGTERM or Ctrl-C after saving its checkpoint; the CLI exits with 130."""


class ViprError(Exception):
    """A problem with the user's input, config or files; the message names it and the fix."""


class DataError(ViprError):
    """A data source is missing, empty, mixed-up or unreadable."""


class ConfigError(ViprError):
    """An unknown or invalid configuration key or value."""


class CheckpointError(ViprError):
    """A checkpoint is missing, corrupt or belongs to another model."""


class RegistryError(ViprError):
    """A tracking store, registered model, version or alias is missing or invalid."""


class ExportError(ViprError):
    """A model cannot be exported, or the exported file does not reproduce it."""


class ContractError(ViprError, TypeError):
    """A module handed to the engine lacks a member of its contract (vipr.engine.task.TrainingTask)."""


class TrainingError(ViprError):
    """Training itself went wrong (a non-finite loss); the last good checkpoint is kept."""
