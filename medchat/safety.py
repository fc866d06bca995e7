"""Red-flag symptom detection for the chat: a pure function, no model, no I/O.

``red_flag(text)`` returns an emergency notice when a user message describes symptoms that need urgent
care now (chest pain with breathlessness, stroke signs, suicidal thoughts, anaphylaxis, severe
bleeding, …), else None. The notice is shown above the answer; it never blocks the answer.

The rules lean towards showing the notice: a needless notice costs a glance, a missed one can cost
far more. A term is ignored when a negation ("no", "not", "without", "denies") shortly precedes it,
so "no chest pain, just a cough" does not trigger.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EMERGENCY = "call your local emergency number (112 in Europe, 911 in the US and Canada, 999 in the UK, 000 in Australia)"


@dataclass(frozen=True)
class RedFlag:
    """One emergency category matched in a message."""

    category: str  # stable id, e.g. "cardiac", "stroke", "suicide"
    title: str  # short heading for the notice
    advice: str  # what to do, one or two sentences

    @property
    def notice(self) -> str:
        return f"{self.title}. {self.advice}"


def _terms(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(words) + r")", re.IGNORECASE)


# Negation: "no", "not", "without", "denies", "never" within three words before the term.
_NEGATION = re.compile(r"\b(?:no|not|without|denies|denied|never|nor|negative for)\b(?:\W+\w+){0,3}\W*$", re.I)

CHEST_PAIN = _terms(
    r"chest (?:pain|pains|tightness|pressure|discomfort|heaviness)",
    r"(?:pain|pressure|tightness|heaviness|discomfort) (?:in|on|across) (?:my |the |his |her )?chest",
    r"crushing (?:pain|chest)",
    r"angina",
)
CARDIAC_COMPANION = _terms(
    r"short(?:ness)? of breath",
    r"breathless",
    r"(?:can'?t|cannot|can not|struggling to|hard to|difficulty|trouble) (?:breath|catch)",
    r"difficulty breathing",
    r"dyspn(?:o)?ea",
    r"gasping",
    r"sweat(?:ing|y)",
    r"radiat(?:es|ing) (?:to|down|into)",
    r"(?:left )?arm (?:pain|numb)",
    r"jaw pain",
    r"nause(?:a|ous)",
    r"clammy",
)
HEART_ATTACK = _terms(r"heart attack", r"myocardial infarction", r"cardiac arrest")

STROKE_FACE = _terms(
    r"face (?:is )?(?:droop|drooping|drooped|fallen|numb)",
    r"(?:droop|drooping|drooped)(?:\w+)? (?:face|mouth|eyelid|side of (?:my|his|her|the) face)",
    r"facial (?:droop|weakness|numbness|palsy)",
    r"(?:mouth|smile) (?:is )?(?:droop|drooping|lopsided|uneven)",
)
STROKE_ARM = _terms(
    r"(?:sudden(?:ly)? )?(?:weak|weakness|numb|numbness|paralys\w+|can'?t (?:lift|move)) (?:in |of )?(?:my |his |her |the |one )?(?:arm|leg|side)",
    r"(?:arm|leg|one side) (?:is |went |feels )?(?:weak|numb|limp|paralys\w+|dead)",
    r"one[- ]sided (?:weakness|numbness)",
    r"hemipar\w+",
)
STROKE_SPEECH = _terms(
    r"slurr(?:ed|ing) (?:speech|words)",
    r"speech (?:is )?(?:slurred|garbled|confused)",
    r"(?:can'?t|cannot|unable to|trouble|difficulty) (?:speak|talk|find (?:my|the) words)",
    r"sudden(?:ly)? (?:confus\w+|blind\w*|los(?:s|t) of (?:vision|sight|balance))",
    r"worst headache",
    r"thunderclap headache",
)
STROKE_WORD = _terms(r"(?:having|had|is having|signs of) a stroke\b(?! of)", r"\bstroke symptoms", r"\bFAST\b test")

SUICIDE = _terms(
    r"suicid\w*",
    r"kill(?:ing)? (?:my ?self|myself)",
    r"end(?:ing)? (?:my|it) (?:life|all)",
    r"take my (?:own )?life",
    r"(?:want|wish|wanted) to die",
    r"(?:don'?t|do not) want to (?:live|be alive|wake up)",
    r"better off dead",
    r"self[- ]?harm\w*",
    r"(?:hurt|harm|cut|cutting|burn|burning) (?:my ?self|myself)",
    r"overdos(?:e|ed|ing) on purpose",
    r"no reason to live",
)

ANAPHYLAXIS = _terms(
    r"anaphyla\w+",
    r"(?:throat|tongue|lips?|face) (?:is |are |feels? |started )?(?:swell\w*|swollen|closing|tight)",
    r"swell\w* (?:of )?(?:the |my |his |her )?(?:throat|tongue|lips?)",
    r"(?:can'?t|cannot|trouble|difficulty) (?:swallow|breath\w*) after (?:eating|a sting|a bee|being stung|taking)",
    r"epi ?pen",
    r"allergic reaction.{0,40}(?:breath|swell|throat|faint|dizz)",
)

BLEEDING = _terms(
    r"(?:bleeding|blood) (?:won'?t|will not|doesn'?t|does not|isn'?t|is not) (?:stop|slow)",
    r"(?:can'?t|cannot|unable to) stop (?:the )?bleeding",
    r"(?:heavy|severe|profuse|uncontrol\w+|massive|spurting|gushing) bleeding",
    r"bleeding (?:heavily|profusely|a lot)",
    r"(?:vomit\w*|throwing up|cough\w* up) (?:blood|bright red)",
    r"(?:lot of|lots of|pool of) blood",
    r"haematemesis|hematemesis",
)

UNRESPONSIVE = _terms(
    r"(?:not|isn'?t|stopped) breathing",
    r"unconscious",
    r"unresponsive",
    r"(?:won'?t|will not|can'?t) wake (?:up|him|her)",
    r"passed out and",
    r"seizure (?:lasting|for) (?:more than )?(?:5|five|ten|10) ?min",
    r"(?:blue|grey|gray) lips",
)

OVERDOSE_POISON = _terms(
    r"overdos(?:e|ed|ing)",
    r"swallowed (?:a (?:bottle|handful)|bleach|poison|batteries|a battery)",
    r"(?:took|taken|ate|swallowed) (?:a (?:bottle|handful|whole (?:box|pack|packet|bottle))|too many|all (?:my|the|of my)) (?:of )?(?:my |the )?(?:pills|tablets|paracetamol|acetaminophen|tylenol|sleeping pills|medication|meds)",
    r"poison(?:ed|ing)",
)

MENINGITIS = _terms(r"stiff neck", r"neck stiffness", r"rash (?:that )?(?:doesn'?t|does not|won'?t) fade", r"non[- ]blanching rash")
FEVER = _terms(r"fever", r"high temperature", r"febrile", r"vomiting", r"confus\w+", r"headache")


def _hits(pattern: re.Pattern[str], text: str) -> bool:
    """True if ``pattern`` occurs in ``text`` at least once without a negation just before it."""
    for match in pattern.finditer(text):
        before = text[max(0, match.start() - 40) : match.start()]
        if not _NEGATION.search(before):
            return True
    return False


def red_flags(text: str) -> list[RedFlag]:
    """Every emergency category the message matches, most urgent first (may be empty)."""
    t = " ".join(text.split())  # one line: patterns span words, not lines
    found: list[RedFlag] = []
    if _hits(SUICIDE, t):
        found.append(
            RedFlag(
                "suicide",
                "If you are thinking about suicide or harming yourself, please reach out now",
                "Call or text 988 (US and Canada), call 116 123 (Samaritans, UK and Ireland), contact a "
                "local crisis line, or " + EMERGENCY + " if you are in immediate danger. You are not alone.",
            )
        )
    if _hits(UNRESPONSIVE, t):
        found.append(
            RedFlag(
                "unresponsive",
                "Someone unresponsive, not breathing or in a long seizure is an emergency",
                EMERGENCY[0].upper() + EMERGENCY[1:] + "; the dispatcher will guide you through first aid.",
            )
        )
    if (_hits(CHEST_PAIN, t) and _hits(CARDIAC_COMPANION, t)) or _hits(HEART_ATTACK, t):
        found.append(
            RedFlag(
                "cardiac",
                "Chest pain with breathlessness, sweating or pain spreading to the arm or jaw can be a heart attack",
                "If this is happening now, " + EMERGENCY + ". Do not drive yourself to hospital.",
            )
        )
    stroke_signs = sum(_hits(p, t) for p in (STROKE_FACE, STROKE_ARM, STROKE_SPEECH))
    if stroke_signs or _hits(STROKE_WORD, t):
        found.append(
            RedFlag(
                "stroke",
                "Face drooping, arm or leg weakness, or slurred speech can be a stroke (FAST)",
                "Time matters: if these signs are present now, " + EMERGENCY + " and note when they started.",
            )
        )
    if _hits(ANAPHYLAXIS, t):
        found.append(
            RedFlag(
                "anaphylaxis",
                "Swelling of the throat, tongue or lips, or trouble breathing after an allergen, can be anaphylaxis",
                "Use an adrenaline (epinephrine) auto-injector if one is available and " + EMERGENCY + ".",
            )
        )
    if _hits(BLEEDING, t):
        found.append(
            RedFlag(
                "bleeding",
                "Heavy bleeding that will not stop, or vomiting or coughing up blood, is an emergency",
                "Press firmly on the wound with a clean cloth and " + EMERGENCY + ".",
            )
        )
    if _hits(OVERDOSE_POISON, t):
        found.append(
            RedFlag(
                "poisoning",
                "An overdose or poisoning needs urgent help even when you feel well",
                EMERGENCY[0].upper() + EMERGENCY[1:] + " or your poison control centre (1-800-222-1222 in the US).",
            )
        )
    if _hits(MENINGITIS, t) and _hits(FEVER, t):
        found.append(
            RedFlag(
                "meningitis",
                "Fever with a stiff neck or a rash that does not fade under a glass can be meningitis or sepsis",
                "Get urgent medical help now: " + EMERGENCY + ".",
            )
        )
    return found


def red_flag(text: str) -> RedFlag | None:
    """The most urgent emergency category in ``text``, or None."""
    flags = red_flags(text)
    return flags[0] if flags else None


def notice_text(text: str) -> str | None:
    """All matched notices as one block of text for display or export, or None."""
    flags = red_flags(text)
    if not flags:
        return None
    return "\n".join(f.notice for f in flags)


DISCLAIMER = (
    "medchat gives medical information, not medical advice. It can be wrong. "
    "For a diagnosis or treatment see a clinician; in an emergency call your local emergency number."
)
