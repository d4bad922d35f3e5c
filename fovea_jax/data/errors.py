"""`DataError`: data that a task cannot read, reported on one line.

Raised by the tasks' readers and checks (`fovea_jax.tasks`) before a dataset
is built, so bad data stops a run before anything is written. The message
always has the same form,

    <file>[:<line>]: <problem>. Fix: <fix>.

and the entry points (`python -m fovea_jax.train` and the others) print just
that line instead of a traceback: the traceback would lead through tf.data and
gin, while the line says what to change. This module imports nothing heavy.
"""


def _one_line(text: str) -> str:
  return ' '.join(str(text).splitlines()).strip().rstrip('.')


class DataError(ValueError):
  """Data that cannot be read as its task needs.

  Attributes:
    where: the file, `file:line`, or data dir (or the setting naming one).
    problem: what is wrong there.
    fix: what to do about it.
    message: the one-line message, `<where>: <problem>. Fix: <fix>.`
  """

  def __init__(self, where: str, problem: str, fix: str):
    self.where = str(where)
    self.problem = _one_line(problem)
    self.fix = _one_line(fix)
    # An attribute rather than a property: gin re-raises errors from inside a
    # configurable through a proxy whose own `args` are empty but which hands
    # attribute reads on to the original error.
    self.message = f'{self.where}: {self.problem}. Fix: {self.fix}.'
    super().__init__(self.message)
