"""Stand-in of sglang.srt.sampling.custom_logit_processor: the documented base class."""

import json
from abc import ABC, abstractmethod
from functools import cache
from typing import Any, Optional

import dill


@cache
def _cache_from_str(json_str: str):
    return dill.loads(bytes.fromhex(json.loads(json_str)["callable"]))


class CustomLogitProcessor(ABC):
    @abstractmethod
    def __call__(self, logits, custom_param_list: Optional[list[dict[str, Any]]] = None):
        raise NotImplementedError

    @classmethod
    def to_str(cls) -> str:
        return json.dumps({"callable": dill.dumps(cls).hex()})

    @classmethod
    def from_str(cls, json_str: str):
        return _cache_from_str(json_str)()
