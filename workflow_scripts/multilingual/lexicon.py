"""Italian and German caption grammars over the world's scene attributes.

Each language has its own vocabulary (synonyms per attribute value), its own word order (Italian puts
adjectives after the noun; German inflects adjectives by gender and number), its own sentence templates
and its own omission rates, so that a caption is a fresh description of the scene, never a translation
of another language's caption. English is the world's own caption (workflow_scripts.world.synthetic.human_caption).
Every random choice comes from the generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# A noun: (singular, plural, gender). Gender: "m", "f" (Italian, German) or "n" (German).
Noun = tuple[str, str, str]


@dataclass(frozen=True)
class Language:
    """What a caption grammar needs for one language."""

    code: str
    shapes: dict[str, list[Noun]]
    colours: dict[str, list[str]]          # adjective stems / base forms
    sizes: dict[str, list[str]]
    positions: dict[str, list[str]]
    backgrounds: dict[str, str]
    counts: dict[int, str]
    junk: list[str]
    omit: dict[str, float]                 # attribute -> probability the caption leaves it out
    caption: Callable[["Language", dict, np.random.Generator], str]


def _pick(rng: np.random.Generator, options: list):
    return options[rng.integers(len(options))]


# ----------------------------------------------------------------------------- Italian

_IT_INVARIABLE = {"blu", "viola", "ciano", "smeraldo", "turchese", "arancione", "lilla", "arancio"}


def it_adjective(base: str, gender: str, plural: bool) -> str:
    """Italian adjective agreement: -o/-a/-i/-e, -e/-i, invariable colours unchanged."""
    if base in _IT_INVARIABLE:
        return base
    if base.endswith("o"):
        stem = base[:-1]
        if base.endswith("co") and base not in ("poco",):       # bianco -> bianchi / bianche
            return {("m", False): base, ("f", False): stem + "a", ("m", True): stem + "hi",
                    ("f", True): stem + "he"}[(gender, plural)]
        return {("m", False): base, ("f", False): stem + "a", ("m", True): stem + "i",
                ("f", True): stem + "e"}[(gender, plural)]
    if base.endswith("e"):
        return base[:-1] + "i" if plural else base
    return base


def it_article(noun: str, gender: str) -> str:
    if gender == "f":
        return "un'" if noun[0] in "aeiou" else "una "
    return "uno " if noun.startswith(("s", "z")) and len(noun) > 1 and noun[1] not in "aeiou" else "un "


def it_caption(lang: Language, scene: dict, rng: np.random.Generator) -> str:
    """An Italian alt-text: noun first, adjectives after it, position and background as phrases."""
    if rng.random() < 0.03:
        return _pick(rng, lang.junk)
    singular, plural_form, gender = _pick(rng, lang.shapes[scene["shape"]])
    many = scene["count"] > 1
    noun = plural_form if many else singular
    adjs = []
    if rng.random() > lang.omit["colour"]:
        adjs.append(it_adjective(_pick(rng, lang.colours[scene["colour"]]), gender, many))
    size = it_adjective(_pick(rng, lang.sizes[scene["size"]]), gender, many) if rng.random() > lang.omit["size"] else ""
    if size and rng.random() < 0.5:
        head = f"{size} {noun}"                               # "piccolo cerchio rosso"
    else:
        head, adjs = noun, adjs + ([size] if size else [])
    np_ = " ".join([head] + adjs)
    if many:
        count = lang.counts[scene["count"]] if rng.random() < 0.75 else ("alcune" if gender == "f" else "alcuni")
        np_ = f"{count} {np_}"
    else:
        np_ = it_article(np_, gender) + np_
    where = (_pick(rng, lang.positions[scene["position"]])
             if not many and rng.random() > lang.omit["position"] else "")
    bg = lang.backgrounds[scene["background"]] if rng.random() > lang.omit["background"] else ""
    template = int(rng.integers(6))
    if template == 0:
        text = f"{np_} {where}"
    elif template == 1:
        text = f"foto di {np_}" + (f" su sfondo {bg}" if bg else "")
    elif template == 2:
        text = f"{np_} su sfondo {bg or 'neutro'}"
    elif template == 3:
        text = f"primo piano: {np_} {where}"
    elif template == 4:
        text = f"immagine con {np_}" + (f", sfondo {bg}" if bg else "")
    else:
        text = f"{where + ', ' if where else ''}{np_}"
    return " ".join(text.replace(" ,", ",").split())


ITALIAN = Language(
    code="it",
    shapes={
        "circle": [("cerchio", "cerchi", "m"), ("disco", "dischi", "m"), ("tondo", "tondi", "m")],
        "square": [("quadrato", "quadrati", "m"), ("riquadro", "riquadri", "m")],
        "triangle": [("triangolo", "triangoli", "m")],
        "diamond": [("rombo", "rombi", "m"), ("losanga", "losanghe", "f")],
        "cross": [("croce", "croci", "f"), ("segno più", "segni più", "m")],
        "ring": [("anello", "anelli", "m"), ("ciambella", "ciambelle", "f")],
        "star": [("stella", "stelle", "f"), ("stellina", "stelline", "f")],
        "heart": [("cuore", "cuori", "m"), ("cuoricino", "cuoricini", "m")],
    },
    colours={"red": ["rosso", "scarlatto", "rosso"], "orange": ["arancione", "arancio"],
             "yellow": ["giallo", "dorato"], "green": ["verde", "smeraldo"], "cyan": ["ciano", "turchese"],
             "blue": ["blu", "azzurro", "blu"], "purple": ["viola", "violetto", "lilla"],
             "white": ["bianco", "candido"]},
    sizes={"small": ["piccolo", "minuscolo"], "large": ["grande", "enorme"]},
    positions={"top left": ["in alto a sinistra", "nell'angolo in alto a sinistra"],
               "top right": ["in alto a destra", "nell'angolo in alto a destra"],
               "bottom left": ["in basso a sinistra", "nell'angolo in basso a sinistra"],
               "bottom right": ["in basso a destra", "nell'angolo in basso a destra"]},
    backgrounds={"plain": "in tinta unita", "striped": "a righe", "checkered": "a scacchi", "dotted": "a pois",
                 "gradient": "sfumato", "noisy": "granuloso", "grid": "a griglia", "wavy": "ondulato"},
    counts={2: "due", 3: "tre"},
    junk=["immagine senza titolo", "foto d'archivio", "solo a scopo illustrativo", "scarica gratis",
          "elemento grafico", "sfondo per desktop"],
    omit={"colour": 0.2, "size": 0.6, "position": 0.4, "background": 0.7},
    caption=it_caption,
)


# ----------------------------------------------------------------------------- German

_DE_ARTICLE = {"m": "ein", "f": "eine", "n": "ein"}
_DE_ENDING = {"m": "er", "f": "e", "n": "es"}      # strong/mixed ending after "ein"/"eine"


def de_adjective(stem: str, gender: str, plural: bool) -> str:
    """German adjective after an indefinite article (mixed declension, nominative) or, in the plural,
    without article (strong declension): -er/-e/-es, plural -e; invariable colours unchanged."""
    if stem in ("lila", "rosa"):
        return stem
    ending = "e" if plural else _DE_ENDING[gender]
    if stem.endswith("e"):
        ending = ending[1:]
    return stem + ending


def de_caption(lang: Language, scene: dict, rng: np.random.Generator) -> str:
    """A German alt-text: inflected adjectives before the noun, position often fronted."""
    if rng.random() < 0.03:
        return _pick(rng, lang.junk)
    singular, plural_form, gender = _pick(rng, lang.shapes[scene["shape"]])
    many = scene["count"] > 1
    adjs = []
    if rng.random() > lang.omit["size"]:
        adjs.append(de_adjective(_pick(rng, lang.sizes[scene["size"]]), gender, many))
    if rng.random() > lang.omit["colour"]:
        adjs.append(de_adjective(_pick(rng, lang.colours[scene["colour"]]), gender, many))
    if many:
        count = lang.counts[scene["count"]] if rng.random() < 0.6 else "mehrere"
        np_ = " ".join([count, *adjs, plural_form])
    else:
        np_ = " ".join([_DE_ARTICLE[gender], *adjs, singular])
    where = (_pick(rng, lang.positions[scene["position"]])
             if not many and rng.random() > lang.omit["position"] else "")
    bg = lang.backgrounds[scene["background"]] if rng.random() > lang.omit["background"] else ""
    template = int(rng.integers(5))
    if template == 0:
        text = f"{where}: {np_}" if where else np_
    elif template == 1:
        text = f"Foto: {np_}" + (f" auf {bg} Hintergrund" if bg else "")
    elif template == 2:
        text = f"{np_} auf {bg or 'neutralem'} Hintergrund"
    elif template == 3:
        text = f"Nahaufnahme, {np_} {where}"
    else:
        text = f"Symbolbild {np_}" + (f", Hintergrund {bg.removesuffix('em')}" if bg else "")
    return " ".join(text.split())


GERMAN = Language(
    code="de",
    shapes={
        "circle": [("Kreis", "Kreise", "m"), ("Scheibe", "Scheiben", "f"), ("Punkt", "Punkte", "m")],
        "square": [("Quadrat", "Quadrate", "n"), ("Kasten", "Kästen", "m")],
        "triangle": [("Dreieck", "Dreiecke", "n")],
        "diamond": [("Raute", "Rauten", "f"), ("Rhombus", "Rhomben", "m")],
        "cross": [("Kreuz", "Kreuze", "n"), ("Pluszeichen", "Pluszeichen", "n")],
        "ring": [("Ring", "Ringe", "m"), ("Reifen", "Reifen", "m")],
        "star": [("Stern", "Sterne", "m")],
        "heart": [("Herz", "Herzen", "n"), ("Herzchen", "Herzchen", "n")],
    },
    colours={"red": ["rot", "scharlachrot", "rot"], "orange": ["orange", "orangefarben"],
             "yellow": ["gelb", "golden"], "green": ["grün", "smaragdgrün"], "cyan": ["türkis", "cyanfarben"],
             "blue": ["blau", "kobaltblau", "blau"], "purple": ["lila", "violett"], "white": ["weiß", "schneeweiß"]},
    sizes={"small": ["klein", "winzig"], "large": ["groß", "riesig"]},
    positions={"top left": ["oben links", "links oben"], "top right": ["oben rechts", "rechts oben"],
               "bottom left": ["unten links", "links unten"], "bottom right": ["unten rechts", "rechts unten"]},
    backgrounds={"plain": "einfarbigem", "striped": "gestreiftem", "checkered": "kariertem",
                 "dotted": "gepunktetem", "gradient": "verlaufendem", "noisy": "körnigem", "grid": "gerastertem",
                 "wavy": "welligem"},
    counts={2: "zwei", 3: "drei"},
    junk=["Bild ohne Titel", "Archivfoto", "nur zur Illustration", "kostenloser Download", "Grafikelement",
          "Hintergrundbild HD"],
    omit={"colour": 0.1, "size": 0.5, "position": 0.5, "background": 0.6},
    caption=de_caption,
)

LANGUAGES = {lang.code: lang for lang in (ITALIAN, GERMAN)}


# ----------------------------------------------------------------------------- zero-shot prompts


def class_prompt(code: str, attribute: str, value: str) -> str:
    """A zero-shot prompt in language `code` for one class of a world label space (shape or colour);
    English uses the evaluation set's own template instead."""
    lang = LANGUAGES[code]
    if attribute == "shape":
        singular, _, gender = lang.shapes[value][0]
        if code == "it":
            return f"foto di {it_article(singular, gender)}{singular}"
        return f"Foto: {_DE_ARTICLE[gender]} {singular}"
    if attribute == "colour":
        colour = lang.colours[value][0]
        if code == "it":
            return f"una forma {it_adjective(colour, 'f', False)}"
        return f"eine {de_adjective(colour, 'f', False)} Form"
    raise ValueError(f"no {code} prompts for attribute {attribute!r}")
