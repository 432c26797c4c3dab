"""Training captions of demo-world scenes (the class names and templates live with the world, world.py).

Every factor has one canonical phrase per value (the zero-shot class names); captions mix natural
sentences over random subsets of attributes in random orders with lists of canonical phrases, so
that the text tower learns each factor on its own and in context.
"""

import numpy as np

from residual_core.data.world import CLASSNAMES, FACTORS, NUMBER_WORDS, PLURAL, PREFIXES, Scene



def _noun_phrase(scene: Scene, keep: set[str], rng: np.random.Generator) -> str:
    words = []
    count = scene.count + 1
    if "count" in keep:
        words.append(FACTORS["count"][scene.count])
    elif count > 1 and rng.random() < 0.5:
        words.append("some")
    if "size" in keep:
        words.append(scene.value("size"))
    if "colour" in keep:
        words.append(scene.value("colour"))
    if "shape" in keep:
        shape = scene.value("shape")
        words.append(shape if count == 1 else PLURAL[shape])
    else:
        words.append("shape" if count == 1 else "shapes")
    if count == 1 and "count" not in keep:
        words.insert(0, "an" if words[0][0] in "aeiou" else "a")
    return " ".join(words)


def _clauses(scene: Scene, keep: set[str], rng: np.random.Generator) -> list[str]:
    out = []
    if "position" in keep:
        p = scene.value("position")
        out.append(("in the centre" if p == "centre" else
                    [f"at the {p}", f"in the {p} corner", f"at the {p} of the image"][int(rng.integers(3))]))
    if "texture" in keep:
        out.append(f"on a {scene.value('texture')} background")
    if "digit" in keep:
        d = scene.digit
        out.append([f"with the digit {d}", f"next to a handwritten {d}", f"beside the number {NUMBER_WORDS[d]}",
                    f"and the digit {d}"][int(rng.integers(4))])
    rng.shuffle(out)
    return out


def solo_caption(scene: Scene, factor: str, rng: np.random.Generator) -> str:
    """A caption naming one factor only, so that in a batch it can be matched by that factor alone."""
    if factor == "digit":
        d = scene.digit
        text = [f"the digit {d}", f"a handwritten {d}", f"the number {NUMBER_WORDS[d]}"][int(rng.integers(3))]
    else:
        text = CLASSNAMES[factor][scene.factor(factor)]
    return PREFIXES[int(rng.integers(len(PREFIXES)))] + text + "."


def caption(scene: Scene, rng: np.random.Generator, emphasis: dict[str, float] | None = None,
            solo: dict[str, float] | None = None) -> str:
    """A random caption.

    ``emphasis`` raises the chance that a factor is mentioned (e.g. {"digit": 0.9}); ``solo`` gives the
    chance that the caption names that factor and nothing else (e.g. {"digit": 0.25}). A factor that
    the other attributes already tell apart within a batch gets little contrastive signal; a caption
    that names it alone can only be matched through it.
    """
    for factor, p in (solo or {}).items():
        if rng.random() < p:
            return solo_caption(scene, factor, rng)
    names = list(FACTORS)
    emphasis = emphasis or {}
    if rng.random() < 0.5:
        keep = {n for n in names if rng.random() < max(0.6, emphasis.get(n, 0.0))}
        keep = keep or {names[int(rng.integers(len(names)))]}
        parts = [_noun_phrase(scene, keep, rng), *_clauses(scene, keep, rng)]
        text = " ".join(parts) if rng.random() < 0.5 else ", ".join(parts)
    else:
        k = int(rng.integers(1, 5))
        chosen = list(rng.choice(names, size=k, replace=False))
        chosen += [n for n, p in emphasis.items() if n not in chosen and rng.random() < p]
        rng.shuffle(chosen)
        phrases = [CLASSNAMES[n][scene.factor(n)] for n in chosen]
        text = (", " if rng.random() < 0.5 else " and ").join(phrases)
    return PREFIXES[int(rng.integers(len(PREFIXES)))] + text + "."
