"""Problems in, records out: loaders, the Problem schema, crash-safe JSONL files and the
top-k teacher logit store (`logit_store`, written by SSB, read by distillation)."""

from llm_teach.data.jsonl import RecordLog, read_jsonl, write_json_atomic, write_jsonl_atomic
from llm_teach.data.problems import Problem, grading_benchmark, load_problems

__all__ = ["Problem", "RecordLog", "grading_benchmark", "load_problems", "read_jsonl",
           "write_json_atomic", "write_jsonl_atomic"]
