"""The pass infrastructure: passes as data, pipelines as text, a manager that runs them."""

from edgec.passmgr.base import (OptionError, Pass, PassContext, PassError, PassOption, PassUsageError,
                               PassResult)
from edgec.passmgr.instruments import Instrument, PassRecord
from edgec.passmgr.manager import (DEFAULT_PIPELINE, InternalError, PassManager, PipelineRun,
                                   default_pipeline, parse_and_check, run_pipeline)
from edgec.passmgr.pipeline import Pipeline, PipelineSyntaxError, parse_pipeline
from edgec.passmgr.registry import PassRegistry, default_registry

__all__ = [
    "DEFAULT_PIPELINE", "Instrument", "InternalError", "OptionError", "Pass", "PassContext", "PassError",
    "PassManager", "PassOption", "PassRecord", "PassRegistry", "PassResult", "PassUsageError", "Pipeline",
    "PipelineRun", "PipelineSyntaxError", "default_pipeline", "default_registry", "parse_and_check",
    "parse_pipeline", "run_pipeline",
]
