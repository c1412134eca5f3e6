"""flanx: Flan-style instruction tuning of T5-family models in JAX, exported to Hugging Face."""

import setuptools

CORE = [
    'jax==0.10.2',
    'jaxlib==0.10.2',
    'flax==0.12.8',
    'optax==0.2.8',
    'orbax-checkpoint==0.12.8',
    'gin-config==0.5.0',
    'seqio==0.0.20',
    'tensorflow==2.21.0',
    'tensorflow-datasets==4.9.10',
    'tensorflow-text==2.21.1',
    'sentencepiece==0.2.1',
    'safetensors==0.8.0',
    'tensorstore==0.1.86',
    'numpy==2.4.6',
    'rouge-score==0.1.2',
    'sacrebleu==2.6.0',
    'tensorboardX==2.6.5',
    'tqdm==4.70.1',
    'pyarrow==25.0.1',  # Flan collection files in Parquet
    'matplotlib==3.11.2',  # train_curves.png / checkpoints.png (Agg backend, imported lazily)
]
# seqio's offline preprocessing (`python -m seqio.scripts.cache_tasks_main`, Apache Beam: DirectRunner here,
# Dataflow at scale). Beam needs protobuf<7 and pyarrow<26, hence the core pins of those two (and sentencepiece,
# whose newer wheels carry protobuf-7 generated code).
CACHE = ['apache-beam[tfrecord]==2.78.0']
HF = ['transformers==5.23.0', 'tokenizers==0.23.3', 'torch==2.13.0',
      'peft==0.21.2', 'accelerate==1.15.0']  # peft: LoRA / prompt-tuning adapter export and its verification

setuptools.setup(
    name='flanx',
    version='0.1.0',
    description='Flan-style instruction tuning of T5-family models in JAX, exported to Hugging Face.',
    packages=setuptools.find_packages(include=['flanx', 'flanx.*', 'tasks', 'tasks.*']),
    # gin files and the endpoint handler ship inside the package (flanx/gin links to the repo's gin/).
    package_data={'flanx': ['gin/*/*.gin', 'gin/*.md'], 'tasks': ['data/*']},
    python_requires='>=3.10',
    install_requires=CORE,
    extras_require={
        'tpu': ['jax[tpu]==0.10.2'],
        'gpu': ['jax[cuda12]==0.10.2'],
        # Export verification reloads the folder with transformers (torch, CPU is enough).
        'hf': HF,
        'cache': CACHE,
        # libtpu (the TPU compiler, paired with jax 0.10.2) lets tests and developer machines compile for TPU
        # pods on CPU (flanx.train --topology=v4-64 --compile_only); its wheels are Linux-only.
        # tensorboard: tests read event files back with TensorBoard's own loader (resume must not repeat scalars).
        'test': HF + CACHE + ['pytest==9.2.0', 'nbclient==0.11.0', 'nbformat==5.11.1', 'ipykernel==7.4.0', 'tensorboard==2.21.0',
                      "libtpu==0.0.42.1; sys_platform == 'linux'"],
    },
)
