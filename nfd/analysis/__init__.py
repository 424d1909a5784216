"""Analysis: saved result arrays -> summaries with their statistics (fits, SEs, verdict data).

Pure numpy on the arrays an experiment returns (or a run saved); the reports put the summaries
into words and the plots draw them. `_stats` holds the one copy of the shared statistics."""

from ._curves import curves_summary as curves_summary
from ._decoupling import decoupling_summary as decoupling_summary
from ._decoupling import gap_fit as gap_fit
from ._decoupling import gap_verdict as gap_verdict
from ._decoupling import paired_gaps as paired_gaps
from ._feature_norms import feature_norms_analysis as feature_norms_analysis
from ._gia import gia_summary as gia_summary
from ._gia_limit import gia_limit_summary as gia_limit_summary
from ._kernels import kernel_distance as kernel_distance
from ._kernels import kernel_summary as kernel_summary
from ._nondegeneracy import nondegeneracy_summary as nondegeneracy_summary
from ._scaling import saturation_depth as saturation_depth
from ._scaling import saturation_width as saturation_width
from ._scaling import scaling_summary as scaling_summary
from ._stats import chi2_pvalue as chi2_pvalue
from ._stats import constant_fit as constant_fit
from ._stats import decay_fits as decay_fits
from ._stats import jackknife as jackknife
from ._stats import log_slope as log_slope
from ._stats import log_slope_se as log_slope_se
from ._stats import mean_se as mean_se
from ._stats import power_fit as power_fit
from ._stats import wls as wls
from ._sweep import convergence_summary as convergence_summary
from ._sweep import fit_depth_plateau as fit_depth_plateau
from ._sweep import fit_depth_scaling as fit_depth_scaling
from ._sweep import fit_inverse_width as fit_inverse_width
from ._sweep import member_counts as member_counts
from ._transfer import argmin_lrs as argmin_lrs
from ._transfer import collapse_check as collapse_check
from ._transfer import coordinate_check as coordinate_check
from ._transfer import labels_of as labels_of
from ._transfer import transfer_analysis as transfer_analysis
from ._transfer import transfer_summary as transfer_summary
