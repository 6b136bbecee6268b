"""The rows of a write as tsdb sends them pickled (`WriteBatch.table_batches_pickle`):
data only, read by an unpickler that refuses every class and callable, so that the bytes
can build nothing but lists, dicts, str, int, float, bool and None. No import here needs
grpc: tsdb's own tests load this file by path."""

import io
import pickle
from typing import Any, Dict, List


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"tsdb's rows hold data only, not {module}.{name}")


def loads(data: bytes) -> List[Dict[str, Any]]:
    """InfluxDB's `table_batches` from tsdb's pickle of them."""
    return _DataOnly(io.BytesIO(data)).load()
