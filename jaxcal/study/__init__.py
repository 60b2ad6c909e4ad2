"""The calibration study every experiment ends with: fit T on validation, judge it on test."""

from jaxcal.study.calibrators import (
    CalibratorResult,
    comparison_rows,
    comparison_table,
    fit_calibrators,
)
from jaxcal.study.config import StudyConfig
from jaxcal.study.figures import save_study_figures
from jaxcal.study.measures import Measures, measure
from jaxcal.study.report import (
    calibration_table,
    save_figure_atomic,
    write_outputs,
    write_text_atomic,
)
from jaxcal.study.results import (
    CalibrationStudy,
    MethodResult,
    SplitResult,
    TemperatureResult,
)
from jaxcal.study.run import run_study

__all__ = [
    "CalibrationStudy",
    "CalibratorResult",
    "Measures",
    "MethodResult",
    "SplitResult",
    "StudyConfig",
    "TemperatureResult",
    "calibration_table",
    "comparison_rows",
    "comparison_table",
    "fit_calibrators",
    "measure",
    "run_study",
    "save_figure_atomic",
    "save_study_figures",
    "write_outputs",
    "write_text_atomic",
]
