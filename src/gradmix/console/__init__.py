"""The mixing console: per-track strips, post-fader sends to buses, master chain; console files."""

from gradmix.console.layout import SEND_SPEC, Controls, Layout, Logits, Params, Slot
from gradmix.console.makeup import makeup_to_gain_reduction
from gradmix.console.render import (
    Mixdown,
    StripGroup,
    mix_down,
    pre_master,
    render_chunked,
    render_strips,
    track_outputs,
)
from gradmix.console.schema import SCHEMA_PATH, console_schema, validate
from gradmix.console.setting import BusSetting, ConsoleSetting, Entry, TrackSetting

__all__ = [
    "SEND_SPEC",
    "SCHEMA_PATH",
    "BusSetting",
    "ConsoleSetting",
    "Controls",
    "Entry",
    "Layout",
    "Logits",
    "Mixdown",
    "Params",
    "Slot",
    "StripGroup",
    "TrackSetting",
    "console_schema",
    "makeup_to_gain_reduction",
    "mix_down",
    "pre_master",
    "render_chunked",
    "render_strips",
    "track_outputs",
    "validate",
]
