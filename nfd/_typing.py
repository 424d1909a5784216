"""Dimension letters and array aliases shared by the whole package (see STYLE.md §2).

| letter | meaning                         | letter | meaning                            |
|--------|---------------------------------|--------|------------------------------------|
| B      | minibatch size                  | D      | input dimension                    |
| P      | tracked inputs (train ∪ test)   | C      | output dimension                   |
| M      | particles of the limit solver   | K      | layer steps of the depth solver    |
| N      | width of the finite network     | S      | saved training steps               |
| L      | residual blocks                 | E      | ensemble members (seeds)           |
"""

from typing import TypeAlias

from jaxtyping import Array, Float, Int, PRNGKeyArray

Scalar: TypeAlias = Float[Array, ""]
RealScalarLike: TypeAlias = float | int | Float[Array, ""]

__all__ = ["Array", "Float", "Int", "PRNGKeyArray", "RealScalarLike", "Scalar"]
