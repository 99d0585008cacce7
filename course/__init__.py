"""textrlhf course kit: six graded exercises on the maths of RLHF, and their autograder.

* ``course/exercises/`` — the student's files (``TODO`` bodies raise ``NotImplementedError``);
* ``course/solutions/`` — reference solutions (thin wrappers of the project's own code for 1-4, a
  hand-written RLOO loop for 5, an algorithm comparison for 6);
* ``course/scaffold.py`` — the given helpers of exercises 5-6 (sampling through ``TextRLHF-v0``,
  teacher-forced log-probs, CSV and plots);
* ``python -m course.grade [ex1 ...] [--solutions DIR] [--timeout S]`` — the autograder (one child process
  per exercise, see :mod:`course.grading`).

See ``course/README.md``.
"""
