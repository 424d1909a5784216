"""Reports: summaries -> markdown. The prose is written from the numbers, never in advance."""

from ._decoupling import decoupling_report as decoupling_report
from ._feature_norms import feature_norms_report as feature_norms_report
from ._format import SMOKE_BANNER as SMOKE_BANNER
from ._format import UNDETERMINED as UNDETERMINED
from ._gia import gia_report as gia_report
from ._gia_limit import gia_limit_report as gia_limit_report
from ._nondegeneracy import nondegeneracy_report as nondegeneracy_report
from ._scaling import scaling_report as scaling_report
from ._sweep import mode_name as mode_name
from ._sweep import summary_table as summary_table
from ._sweep import sweep_report as sweep_report
from ._transfer import transfer_report as transfer_report
