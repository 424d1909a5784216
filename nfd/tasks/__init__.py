"""Datasets ("tasks"): a `Task` of train/test inputs and targets, and the builders that make one."""

from ._tasks import Task as Task
from ._tasks import build_task as build_task
from ._tasks import digits as digits
from ._tasks import mnist1d as mnist1d
from ._tasks import npz as npz
from ._tasks import teacher_student as teacher_student
