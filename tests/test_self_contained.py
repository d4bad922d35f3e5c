"""The repository stands alone: nothing in it points to reference material
outside it (the math lives in docs/attention.md, framework facts in
docs/framework.md), and the docs that code cites exist."""
import os
import pathlib
import re

REPO = pathlib.Path(__file__).parents[1]
# Built here from pieces so that this file does not match itself.
OUTSIDE = re.compile('shared' + '/spec|spec' + ' section')
SKIP_DIRS = {'.git', '.venv', 'build', '__pycache__', '.pytest_cache'}


def _repository_files():
  for root, dirs, files in os.walk(REPO):
    dirs[:] = [d for d in dirs
               if d not in SKIP_DIRS and not d.endswith('.egg-info')]
    for name in files:
      yield pathlib.Path(root) / name


def test_nothing_points_outside_the_repository():
  hits = []
  for path in _repository_files():
    try:
      text = path.read_text()
    except (UnicodeDecodeError, OSError):
      continue  # binary files (plots, checkpoints)
    hits += [f'{path.relative_to(REPO)}:{n}' for n, line in
             enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
  assert not hits, hits


def test_cited_docs_sections_exist():
  """Every `docs/<page>.md#<anchor>` cited anywhere names a real heading."""
  cited = set()
  for path in _repository_files():
    if path.suffix in ('.py', '.md', '.gin'):
      cited.update(re.findall(r'docs/(\w+\.md)#([\w-]+)', path.read_text()))
  assert cited
  for page, anchor in cited:
    headings = re.findall(r'^#+ (.+)$', (REPO / 'docs' / page).read_text(),
                          re.MULTILINE)
    anchors = {re.sub(r'[^\w -]', '', h).strip().lower().replace(' ', '-')
               for h in headings}
    assert anchor in anchors, (page, anchor, sorted(anchors))
