"""Datasets ("tasks"): a `Task` of train/test inputs and targets, and the functions that make one
(synthetic teacher–student data, scikit-learn's digits, MNIST-1D generated locally, a user's `.npz`)."""

from ._npz import npz as npz
from ._tasks import Task as Task
from ._tasks import digits as digits
from ._tasks import mnist1d as mnist1d
from ._tasks import teacher_student as teacher_student
