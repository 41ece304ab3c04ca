"""Built-in modalities; importing this package registers them.

Each module is one modality: decoder, preprocessing, quality scorer and encoder
factory, registered as a ``ModalitySpec``. Third-party modalities do the same
in their own package and register through the ``mm_fusion.modalities`` entry point.
"""

from mm_core.modalities import audio, sensor, text, vision  # noqa: F401
