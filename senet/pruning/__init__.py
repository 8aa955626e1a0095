"""Structured channel pruning of senet models, guided by the SE blocks' excitations or by the
usual criteria (paper section 7: the excitations "could be used for other tasks such as network
pruning for model compression").

``prune(model, flops=0.5, criterion="se", calibration=images)`` removes whole channels (with
every channel coupled to them) until the network keeps half its FLOPs; the pruned model is an
ordinary senet model: ``senet.save_weights`` writes it, ``senet.create_model(pretrained=FILE)``
rebuilds it from the file alone. Needs torch-pruning (``pip install 'senet[prune]'``).

The names below are imported on first use (as ``senet``'s), so that ``senet prune --help``,
which lists :data:`CRITERIA`, does not import torch.
"""

from __future__ import annotations

from senet.utils.lazy import lazy_exports

#: the pruning criteria (:func:`senet.pruning.criteria.score_units`)
CRITERIA = ("se", "l1", "bn", "random")
#: training images whose excitations rank the channels (``se``), by default
CALIBRATION = 1000
#: the study's FLOPs targets and criteria, by default (:mod:`senet.pruning.study`)
TARGETS = (0.7, 0.5)
STUDY_CRITERIA = ("se", "l1", "random")

_MODULES = {
    "senet.pruning.core": ("FLOPS_TOLERANCE", "UNSUPPORTED", "PruneResult", "check_target", "prune", "zeroed"),
    "senet.pruning.criteria": ("mean_excitations", "score_units"),
    "senet.pruning.groups": ("GroupedModel", "PruningGroup", "Unit", "group_model"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted([*_EXPORTS, "CALIBRATION", "CRITERIA", "STUDY_CRITERIA", "TARGETS"])

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
