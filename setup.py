"""fovea_jax: hierarchical long-context attention experiments in JAX/Flax."""
import pathlib

import setuptools


_HERE = pathlib.Path(__file__).parent


def _requirements(name):
  lines = (_HERE / name).read_text().splitlines()
  return [l.strip() for l in lines
          if l.strip() and not l.startswith(('#', '-r'))]


setuptools.setup(
    name='fovea_jax',
    version='0.1.0',
    description=('Fovea, Fast Multipole and MASFormer attention with LongT5-style '
                 'networks, gin-configured training and Pallas kernels.'),
    long_description=(_HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    # The gin files ship inside the package (fovea_jax/gin_configs/, found with
    # importlib.resources by fovea_jax.runs.gin_utils); the repository keeps
    # them in the top-level gin_configs/, mapped here.
    packages=[*setuptools.find_packages(include=['fovea_jax', 'fovea_jax.*']),
              'fovea_jax.gin_configs'],
    package_dir={'fovea_jax.gin_configs': 'gin_configs'},
    package_data={'fovea_jax': ['py.typed'],
                  'fovea_jax.gin_configs': ['*/*.gin'],
                  'fovea_jax.t5x_compat': ['gin/*.gin']},
    python_requires='>=3.11',
    install_requires=_requirements('requirements.txt'),
    extras_require={
        'test': _requirements('requirements-test.txt'),
        'parity': ['torch==2.13.0', 'transformers==5.23.0'],
    },
)
