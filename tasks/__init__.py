"""seqio tasks and mixtures for flanx (Dolly, Flan 2022, native CoT, the demo set, BBH and MMLU evaluation).

Importing registers everything cheaply: no data is read and no network is touched until a dataset
is built. t5x users point at a module: `--gin.MIXTURE_OR_TASK_MODULE="tasks.dolly"`.
This package never imports flanx.
"""

from tasks import vocab  # pylint: disable=unused-import
from tasks import dolly  # pylint: disable=unused-import
from tasks import demo  # pylint: disable=unused-import
from tasks import cot  # pylint: disable=unused-import
from tasks import registrations
registrations.track(cot.register_cot, call=False)  # cot registered itself on import just now
from tasks import flan  # pylint: disable=unused-import
from tasks import bbh  # pylint: disable=unused-import
from tasks import mmlu  # pylint: disable=unused-import
