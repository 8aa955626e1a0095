"""Structured channel pruning of senet models, guided by the SE blocks' excitations or by the
usual criteria (paper section 7: the excitations "could be used for other tasks such as network
pruning for model compression").

``prune(model, flops=0.5, criterion="se", calibration=images)`` removes whole channels (with
every channel coupled to them) until the network keeps half its FLOPs; the pruned model is an
ordinary senet model: ``senet.save_weights`` writes it, ``senet.create_model(pretrained=FILE)``
rebuilds it from the file alone. Needs torch-pruning (``pip install 'senet[prune]'``).
"""

from senet.pruning.core import FLOPS_TOLERANCE, UNSUPPORTED, PruneResult, check_target, prune, zeroed  # noqa: F401
from senet.pruning.criteria import CRITERIA, mean_excitations, score_units  # noqa: F401
from senet.pruning.groups import GroupedModel, PruningGroup, Unit, group_model  # noqa: F401
