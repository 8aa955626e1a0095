"""Analyses of trained SE networks and the paper's ablation studies (Hu et al., TPAMI 2019,
sections 6 and 7): ``senet ablate`` and ``senet analyze`` use these modules.

The names below are imported on first use (as ``senet``'s), so that ``senet ablate --help``,
which lists :data:`~senet.analysis.ablate.STUDIES`, does not import torch.
"""

from __future__ import annotations

from senet.utils.lazy import lazy_exports

_MODULES = {
    "senet.analysis.ablate": ("STUDIES", "Cell", "PlannedCell", "StudyPlan", "plan_study", "study_cells"),
    "senet.analysis.ablate_report": ("CellResult", "collect", "write_report"),
    "senet.analysis.ablate_run": ("RunOutcome", "run_study"),
    "senet.analysis.excitation": ("Excitations", "SEBlock", "excitation_hooks", "find_se_blocks",
                                  "last_block_per_stage", "parse_classes", "record_excitations", "sample_channels",
                                  "select_per_class"),
    "senet.analysis.excitation_stats": ("BlockStats", "analyse", "block_statistics", "channel_importance",
                                        "summary_table", "write_outputs"),
    "senet.analysis.paper_ablations": ("PaperAblation", "paper_ablation", "paper_ablations"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
