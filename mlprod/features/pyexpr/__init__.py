"""Row expressions compiled into Python callables, for serving one request row fast.

The batch engine evaluates a feature's DuckDB SQL in DuckDB; a server answering one row cannot
pay ~1 ms per query. So the same sqlglot tree is walked once and turned into nested closures
that give, for one row of Python values, exactly what DuckDB gives (the tests compare the two
on real rows and on random expressions). Anything without a faithful evaluator here raises
``UnsupportedExpression`` at compile time, so a caller can keep DuckDB for that expression.

Values: NULL is ``None``; BOOLEAN ``bool``; INTEGER/BIGINT ``int``; DOUBLE ``float``; VARCHAR
``str``; TIMESTAMP a naive UTC ``datetime``; DATE ``date``; INTERVAL ``timedelta`` (no
months). Decimal literals (``0.1``) are DECIMAL in DuckDB, so they are exact ``Decimal`` inside
(``0.1 * 3 = 0.3`` is true, as in DuckDB) and a DECIMAL result is returned as ``float``.
Without ``types``, a row must give each column in the kind of its type (a DOUBLE column as
``float`` even when whole): the kind decides integer or float arithmetic, as the column type
does in DuckDB. With ``types``, a whole number in a float column is read as a float.

Where DuckDB raises (integer overflow, ``//`` or ``%`` by zero, a failed CAST, an impossible
date), the callable raises ``FeatureError``; it never lets a Python exception out. Known gaps:
LENGTH, SUBSTRING and the like count code points where DuckDB may count grapheme clusters;
DECIMAL widths are not tracked (DuckDB's DECIMAL(38) overflow is not reproduced); timestamps
outside the years 1-9999 raise; and where a whole vector of one argument is NULL, DuckDB skips
the other arguments (and their errors), which one row at a time cannot know, so a row can fail
here on an out-of-range argument where DuckDB gives NULL.
"""

from mlprod.features.pyexpr._compiler import compile_row_function
from mlprod.features.pyexpr._nodes import Row, RowFunction, UnsupportedExpression

__all__ = ["Row", "RowFunction", "UnsupportedExpression", "compile_row_function"]
