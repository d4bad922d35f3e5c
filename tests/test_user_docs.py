"""The user-facing text stays about the software: README, docs, experiments,
tools, code comments, gin files and tool output say what the software does and
what was measured, never how the work on it went; README stays short, and the
links between the documents resolve."""
import os
import pathlib
import re
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]
SCANNED = ('README.md', 'docs', 'experiments', 'tools', 'fovea_jax',
           'gin_configs')
SKIP_DIRS = {'.git', '.venv', 'build', '__pycache__', '.pytest_cache'}
README_MAX_LINES = 200
# Phrases that describe the making of the software rather than the software.
PROCESS_TALK = [re.compile(p, re.IGNORECASE) for p in (
    r'this (session|round)',
    r"sessions'",
    r'was lent|not lent',
    r'other (jobs|workers|sessions)',
    r'shared with other',
    r"the issue('s)? (measured|target|asks)",
    r"\bthe issue's\b",
    r"issue[- ]#?[0-9]+'?s? (goal|target)",
    r'\bissue[- ]#?[0-9]+\b',
    r'\b(targets?|goals?) (met|not met)\b',
    r'\bnot met\b',
    r'tried and dropped',
    r'\b(earlier|previous|last|next) rounds?\b',
    r'\btickets?\b',
)]
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def _scanned_files():
  """Tracked and new (not ignored) files under SCANNED; a walk without git."""
  try:
    listed = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard', '--',
         *SCANNED], cwd=REPO, capture_output=True, text=True, check=True)
    paths = [REPO / line for line in listed.stdout.splitlines()]
  except (OSError, subprocess.CalledProcessError):
    paths = []
    for top in SCANNED:
      if (REPO / top).is_file():
        paths.append(REPO / top)
      for root, dirs, files in os.walk(REPO / top):
        dirs[:] = [d for d in dirs
                   if d not in SKIP_DIRS and not d.endswith('.egg-info')]
        paths += [pathlib.Path(root) / name for name in files]
  return [p for p in paths if p.is_file()]


def _text(path):
  """The file's text, or None for a binary file (plots, checkpoints)."""
  data = path.read_bytes()
  if b'\0' in data:
    return None
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError:
    return None


def test_no_process_talk():
  files = _scanned_files()
  assert any(p.name == 'README.md' for p in files)
  hits = []
  for path in files:
    text = _text(path)
    if text is None:
      continue
    for number, line in enumerate(text.splitlines(), 1):
      hits += [f'{path.relative_to(REPO)}:{number}: {line.strip()}'
               for pattern in PROCESS_TALK if pattern.search(line)]
  assert not hits, ('Say what the software does and what was measured, not '
                    'how the work went:\n' + '\n'.join(hits))


def test_patterns_catch_process_talk():
  """Each pattern matches what it is for and leaves ordinary prose alone."""
  talk = ["This session's run", 'while six other jobs shared it',
          'the issue measured 11%', "issue 4's goals", 'target not met',
          'Tried and dropped this round', 'see issue #12', 'Issue-4 goals',
          'no GPU was lent', 'in earlier rounds']
  for line in talk:
    assert any(p.search(line) for p in PROCESS_TALK), line
  prose = ['the loss is rounded to 4 digits', 'targets 256, batch 1',
           'the target length', 'a summary of the issue of padding']
  for line in prose:
    assert not any(p.search(line) for p in PROCESS_TALK), line


def test_readme_is_short():
  lines = (REPO / 'README.md').read_text().splitlines()
  assert len(lines) <= README_MAX_LINES, (
      f'README.md has {len(lines)} lines (at most {README_MAX_LINES}): move '
      'detail to docs/ and link it.')


def _anchors(markdown_path):
  headings = re.findall(r'^#+ (.+)$', markdown_path.read_text(), re.MULTILINE)
  return {re.sub(r'[^\w -]', '', h).strip().lower().replace(' ', '-')
          for h in headings}


def test_relative_links_resolve():
  pages = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
  broken, checked = [], 0
  for page in pages:
    for target in LINK.findall(page.read_text()):
      if re.match(r'[a-z]+:', target):
        continue  # http(s), mailto: not this test's business
      path, _, anchor = target.partition('#')
      resolved = (page.parent / path).resolve() if path else page
      checked += 1
      if not resolved.exists():
        broken.append(f'{page.relative_to(REPO)}: {target} (no such file)')
      elif anchor and resolved.suffix == '.md' and (
          anchor not in _anchors(resolved)):
        broken.append(f'{page.relative_to(REPO)}: {target} (no such heading)')
  assert checked
  assert not broken, broken
