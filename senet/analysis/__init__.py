"""Analyses of trained SE networks and the paper's ablation studies (Hu et al., TPAMI 2019,
sections 6 and 7): ``senet ablate`` and ``senet analyze`` use these modules."""

from senet.analysis.ablate import STUDIES, Cell, PlannedCell, StudyPlan, plan_study, study_cells  # noqa: F401
from senet.analysis.ablate_report import CellResult, collect, write_report  # noqa: F401
from senet.analysis.ablate_run import RunOutcome, run_study  # noqa: F401
from senet.analysis.excitation import (  # noqa: F401
    Excitations,
    SEBlock,
    excitation_hooks,
    find_se_blocks,
    last_block_per_stage,
    parse_classes,
    record_excitations,
    sample_channels,
    select_per_class,
)
from senet.analysis.excitation_stats import (  # noqa: F401
    BlockStats,
    analyse,
    block_statistics,
    channel_importance,
    summary_table,
    write_outputs,
)
from senet.analysis.paper_ablations import PaperAblation, paper_ablation, paper_ablations  # noqa: F401
