"""Red-flag symptom detection for the chat: a pure keyword and pattern layer, no model, no I/O.

``red_flags(text)`` returns the emergency notices for a user message that describes something needing
urgent care now, else an empty list. The notice is shown above the answer; it never blocks the answer.

The categories follow public triage guidance: the NHS "call 999 / go to A&E" lists, the Manchester
Triage System's discriminators (airway, breathing, shock, unresponsive, fitting, haematemesis, severe
pain, pregnancy with bleeding or pain, non-blanching rash, significant mechanism of injury) and
poison-centre advice (button batteries, caustics, tablet counts). The rules lean towards showing the
notice: a needless notice costs a glance, a missed one can cost far more. Three things keep false
alarms down:

- a sign is ignored when a negation ("no", "not", "without", "denies") shortly precedes it;
- several signs need a companion (chest pain *with* breathlessness or sweating, black stools *with*
  dizziness, a fever *in a baby of weeks*);
- a message that reads as a question *about* medicine — an exam vignette ("A 65-year-old man presents
  with…", "which of the following") or a how/why/what question — with nothing saying it is happening to
  the writer or someone with them (I, my, you, "help", "ago", "what do I do") gets no notice.

Measured on tests/fixtures/red_flags.tsv (written from the guidance above before these rules were tuned;
the figures are in the README and asserted by tests/test_safety.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EMERGENCY = "call your local emergency number (112 in Europe, 911 in the US and Canada, 999 in the UK, 000 in Australia)"
_CALL = EMERGENCY[0].upper() + EMERGENCY[1:]


@dataclass(frozen=True)
class RedFlag:
    """One emergency category matched in a message."""

    category: str  # stable id, e.g. "cardiac", "stroke", "suicide"
    title: str  # short heading for the notice
    advice: str  # what to do, one or two sentences

    @property
    def notice(self) -> str:
        return f"{self.title}. {self.advice}"


def _p(*alternatives: str) -> re.Pattern[str]:
    """One pattern matching any alternative at a word start (text is lower case, apostrophes removed)."""
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")")


# Words and numbers used in several signs.
_KIN = (r"(?:baby|newborn|infant|toddler|child|kid|son|daughter|boy|girl|grandson|granddaughter|husband|wife|"
        r"partner|mum|mom|mother|dad|father|friend|brother|sister|grandad|grandpa|grandma|granny|nan|man|woman|"
        r"someone|somebody|he|she|they|i)")
_MANY = r"(?:[89]|[1-9]\d|[1-9]\d\d)"  # eight or more: beyond any single dose of tablets
_PILLS = (r"(?:tablets?|pills?|capsules?|paracetamol|acetaminophen|tylenol|ibuprofen|aspirin|co-?codamol|"
          r"codeine|tramadol|antidepressants?|sleeping (?:pills|tablets)|meds|medication|of them|"
          r"[a-z]+(?:pine|pam|lam|line|lol|pril|olol|statin|tyline|oxetine|azepam|done|farin)\b)")
_FEVER = r"(?:fever|feverish|high temp\w*|temp\w* (?:of |is |was )?(?:3[89]|4[01])|3[89](?:\.\d)? ?(?:c\b|degrees)|burning up|hot to touch)"
_FAINT = r"(?:faint\w*|pass(?:ed|ing)? out|black(?:ed|ing)? out|collaps\w+|dizz\w+|light ?headed|nearly fainted)"

SIGNS: dict[str, list[tuple[re.Pattern[str], ...]]] = {
    "suicide": [
        (_p(r"suicid\w*", r"kill(?:ing)? (?:my ?self|myself|him ?self|her ?self)", r"end(?:ing)? (?:my|her|his) (?:own )?life",
            r"end it (?:all|tonight|now)", r"going to end it", r"want (?:it|this|everything) (?:all )?to (?:end|stop)",
            r"take my (?:own )?life", r"(?:want|wants|wanted|wish|wishes) (?:to|i was|i were) (?:die|dead)",
            r"(?:dont|do not|doesnt) want to (?:live|be alive|be here|wake up|exist)", r"better off (?:dead|without me)",
            r"self[- ]?harm\w*", r"(?:hurt|harm|cut|cutting|burn|burning|burned|burnt|hurting|harming|hit|punched|starving) (?:my ?self|him ?self|her ?self)",
            r"(?:going to|gonna|will|want to) (?:take|swallow) (?:all|every|the whole) (?:of )?(?:my |the |her |his )?(?:pills|tablets|meds|medication)",
            r"(?:burn|burned|burnt|cut|hurt|hit|harm|scratch)\w* .{0,30}on purpose",
            r"cut (?:my|his|her) wrists?", r"(?:goodbye|suicide) (?:letter|note)s?", r"(?:a )?(?:rope|noose) ready",
            r"jump(?:ing)? (?:off|in front of)", r"no reason to live", r"overdos\w+ on purpose",
            r"(?:took|taken|swallowed|taking) .{0,40}(?:to hurt|to kill|to end|to die|because i want)",
            r"going to do it tonight", r"im going to do it", r"razor", r"(?:cut|cutting|slash\w*|slit\w*) (?:my|his|her|their) (?:arms?|wrists?|legs?|thighs?)",
            r"(?:happier|better) (?:off )?(?:if|without) (?:i|me)", r"if i (?:was|were|wasnt|werent) (?:gone|here|dead)",
            r"(?:pills|tablets|meds) (?:saved|stashed|stockpiled)", r"stockpil\w+", r"sav(?:ed|ing) up (?:my |all my )?(?:pills|tablets|meds)",
            r"hang(?:ing)? (?:my|him|her|them) ?sel(?:f|ves)", r"take them all at once",
            r"(?:dont|cant|do not|cannot) see (?:the|any) point (?:any ?more|in (?:living|going on|life|being here))", r"no point (?:in )?(?:living|going on)",
            r"tonight is the night", r"decided (?:to do it|tonight|when)"),),
    ],
    "unresponsive": [
        (_p(r"(?:not|isnt|stopped|wasnt|barely|hardly) breathing", r"unconscious", r"unresponsive",
            r"(?:wont|cant|cannot|can not|couldnt|unable to) (?:wake|rouse)", r"(?:not|isnt) (?:waking|responding|responsive)",
            r"(?:still )?not waking", r"cant keep (?:him|her|them) awake", r"(?:very|really|extremely|so) drowsy",
            r"knocked (?:out|unconscious)", r"found (?:him|her|them|my \w+) (?:on the floor|collapsed|unconscious)",
            _KIN + r" (?:has |have |had |just |suddenly |then )?collapsed", r"(?:has|have|had|just|suddenly|and|then) collapsed", r"hard to wake", r"passed out and", r"(?:stops|stopped|stopping) breathing", r"slumped",
            r"(?:cant|cannot|couldnt) get (?:any )?(?:response|answer|sense) (?:from|out of)", r"no response from",
            r"(?:wont|will not|doesnt|isnt|not) (?:answer|answering|respond)\w*"),),
    ],
    "breathing": [
        (_p(r"(?:struggling|hard|difficult|cant|cannot|can not|trouble|unable|difficulty|fighting) (?:to )?(?:breathe?|breathing|get (?:a |his |her |my )?breath|catch (?:my|his|her|their) breath)",
            r"gasping", r"chok(?:ing|ed|es)", r"(?:lips|face|fingertips|fingers|skin|tongue|mouth)(?: and \w+)? (?:are |is |going |turning |turned |look |looks |have |has |gone |went )*(?:blue|grey|gray|purple|bluish|blue-ish|dusky)",
            r"(?:blue|grey|gray|bluish|purple) (?:lips|face|tongue)", r"turn(?:ing|ed) (?:blue|purple|grey|gray)",
            r"looks? (?:blue|bluish|grey|gray)", r"cant (?:finish|complete|speak in|talk in|say) (?:a |full |whole )?sentences?",
            r"grunting", r"sucking in (?:under|between)", r"(?:rib|chest) recession", r"asthma attack",
            r"inhaler .{0,40}(?:not helping|isnt helping|not working|doesnt help|no help)",
            r"wheez\w+ (?:badly|really bad|so bad)", r"so breathless", r"breathing (?:is )?(?:really |very )?(?:fast and shallow|shallow|funny|strange|noisy)",
            r"(?:fighting|gasping|struggling) for (?:breath|air)", r"breathing (?:really |very )?(?:weird|weirdly|oddly|strangely)", r"stridor", r"(?:whistling|crowing|high[- ]pitched) (?:noise|sound)\W+(?:\w+\W+){0,3}breath\w*"),),
        (_p(r"drool\w*"), _p(r"breath\w*", r"swallow\w*")),
        (_p(r"wheez\w+", r"asthma"), _p(r"cant (?:talk|speak)", r"inhaler", r"lips", r"blue", r"struggling", r"exhausted")),
    ],
    "cardiac": [
        (_p(r"chest (?:pain|pains|tightness|pressure|discomfort|heaviness|hurts)", r"(?:pain|pressure|tightness|heaviness|discomfort|band) (?:in|on|across|around) (?:my |the |his |her )?chest",
            r"crushing (?:pain|chest)", r"angina", r"(?:elephant|weight) (?:sitting |is sitting )?on (?:my |his |her )?chest", r"holding (?:his|her|my) chest",
            r"chest feels", r"(?:chest|breastbone|sternum)\W+(?:\w+\W+){0,4}(?:pain|tight|pressure|heav|hurt|crush|squeez|discomfort|ach)",
            r"(?:pain|tight|pressure|heav|hurt|crush|squeez|discomfort|ach)\w*\W+(?:\w+\W+){0,5}(?:my|his|her|the) (?:chest|breastbone|sternum)"),
         _p(r"short(?:ness)? of breath", r"breathless", r"(?:cant|cannot|can not|struggling to|hard to|difficulty|trouble) (?:breath|catch)",
            r"dyspn(?:o)?ea", r"gasping", r"sweat\w*", r"radiat\w+", r"(?:going|spreading|moving|goes|spreads) (?:down|into|to|up)",
            r"(?:left |right )?arm", r"jaw", r"nause\w+", r"(?:feel|feels|feeling) sick", r"clammy", r"grey", r"gray", r"collaps\w+",
            r"at rest", r"getting worse", r"(?:for|since) (?:the last )?\d+ ?min", r"\d+ ?min\w*", _FAINT[3:-1], r"smoker",
            r"vomit\w*", r"being sick", r"throw\w* up", r"pale", r"awful", r"shoulder", r"neck", r"back", r"wont go away", r"im [4-9]\d")),
        (_p(r"(?:having|is having|its|this is|think (?:i|im|hes|shes|he|she|its|this)(?: is)?(?: having)?) an? heart attack",
            r"is (?:this|it) an? heart attack", r"heart attack (?:right )?now", r"cardiac arrest"),),
        # Aortic dissection: tearing pain through to the back.
        (_p(r"(?:tearing|ripping|torn) (?:pain|feeling|sensation)", r"pain .{0,20}(?:tearing|ripping)"),),
    ],
    "stroke": [
        (_p(r"face (?:is |has )?(?:droop\w*|dropped|fallen|lopsided|numb)", r"(?:droop\w*|lopsided|dropped|uneven) (?:face|mouth|smile|eyelid)",
            r"(?:mouth|smile) (?:is |looks )?(?:droop\w*|lopsided|uneven|crooked)", r"side of (?:my|his|her|the) face (?:has |is )?(?:dropped|droop\w*|fallen|numb|gone)",
            r"facial (?:droop|weakness|numbness|palsy)",
            r"(?:cant|cannot|unable to) (?:move|lift|feel) (?:my|his|her|their) (?:left|right) (?:side|arm|leg|hand)",
            r"(?:cant|cannot|unable to) move (?:my|his|her|one) side",
            r"(?:left|right|one) (?:side|arm|leg|hand) (?:is |feels |went |has gone )?(?:weak|numb|dead|paralysed|paralyzed|limp)",
            r"(?:weak|weakness|numb|numbness|paralys\w+) (?:in |of |down )?(?:the |my |his |her |one )?(?:whole )?(?:left|right|one) (?:side|arm|leg)",
            r"one[- ]sided (?:weakness|numbness)", r"sudden(?:ly)? numb\w*", r"slurr\w+",
            r"(?:speech|words) (?:is |are )?(?:slurred|garbled|jumbled|confused)", r"cant get (?:her|his|my|their) words out",
            r"(?:cant|cannot|unable to|trouble|difficulty) (?:speak|find (?:my|the|his|her) words)",
            r"sudden(?:ly)? (?:loss of|lost|lose|losing) (?:vision|sight|balance)", r"(?:loss of|lost) (?:vision|sight) in one eye",
            r"sudden(?:ly)? (?:blind|cant see)", r"worst headache", r"thunderclap", r"sudden(?:ly)? confus\w+",
            r"confused all of a sudden", r"walking like (?:hes|shes|he is|she is) drunk",
            r"(?:having|had|is having|signs of|think (?:i|im|hes|shes|he|she) (?:is |am )?(?:having )?)an? stroke(?! of)",
            r"stroke symptoms", r"gibberish", r"sudden\w* (?:\w+ )?(?:cant|cannot|unable to) understand", r"talking (?:nonsense|rubbish)", r"cant smile",
            r"(?:smile|face|mouth)\W+(?:\w+\W+){0,4}(?:one side|droop\w*|lopsided|dropped|uneven|crooked)",
            r"sudden\w* .{0,20}(?:double vision|blurred vision|cant (?:see|walk|speak|talk))"),),
        (_p(r"\b(?:arm|leg|hand)\b\W+(?:\w+\W+){0,3}(?:weak|numb|heavy|dead|limp|paralys\w+|cant (?:lift|move)|wont move|useless|not working|wont work)",
            r"(?:cant|cannot) (?:lift|move) (?:his|her|my|their) (?:\w+ )?(?:arm|leg|hand)"),
         _p(r"sudden\w*", r"all of a sudden", r"one side", r"face", r"speech", r"understand", r"slurr\w+", r"talk\w*", r"confus\w+", r"ago",
            r"this morning", r"woke up", r"started")),
    ],
    "anaphylaxis": [
        (_p(r"(?:having|is having|going into|gone into|went into|in|is this|think (?:its|this is|im having|i am having|hes having|shes having)) (?:an? )?anaphyla\w+",
            r"anaphyla\w+ (?:now|again|right now)", r"(?:throat|tongue|lips?|face|mouth|eyes?)(?: and \w+)? (?:is |are |feels? |started |getting |going |has )*(?:swell\w*|swollen|closing|puff\w*|tight)",
            r"swell\w* (?:up )?(?:of )?(?:the |my |his |her )?(?:throat|tongue|lips?|face)",
            r"(?:lips|tongue|mouth) (?:are |is )?tingling",
            r"(?:stung|sting|bee|wasp|hornet).{0,60}(?:breath|swell|swollen|faint|dizz|hives|wheez|throat|rash)",
            r"(?:allergy|allergic).{0,80}(?:wheez|breath|swell|swollen|throat|faint|dizz|hives|rash)",
            r"epi ?pen", r"adrenaline (?:pen|auto)", r"hives\W+(?:\w+\W+){0,6}(?:breath\w*|throat|swell\w*|swollen|faint|dizz\w*|wheez\w*)",
            r"new (?:antibiotic|medicine|medication|drug|tablets?)\W+(?:\w+\W+){0,6}(?:hives|breath\w*|swell\w*|swollen|wheez\w*|throat)", r"(?:tongue|lips|throat) (?:feels |is |are )?(?:huge|big|thick)"),),
    ],
    "seizure": [
        (_p(r"fitting", r"seizing", r"convulsing", r"(?:having|is having|had|has had) (?:an? )?(?:seizure|fit)s? (?:for|lasting)",
            r"(?:seizure|fit|fitting|convulsion)s? (?:lasting|for|over|longer than) (?:more than |over |about |nearly )?(?:[5-9]|[1-9]\d|five|six|seven|eight|ten|fifteen|twenty)",
            r"(?:seizure|fit)s? (?:and it )?(?:wont|will not|doesnt|isnt) stop", r"(?:having|is having) an? (?:seizure|fit)\b",
            r"(?:seizure|fit) for the first time", r"first (?:ever )?(?:seizure|fit)", r"\d+ (?:seizures|fits) in a row",
            r"(?:seizures|fits) (?:in a row|back to back)", r"eyes (?:are )?rolling",
            r"(?:fit|fitting|seiz\w*|shaking|jerk\w*|twitch\w*|convuls\w*) .{0,40}(?:\b(?:[5-9]|[1-9]\d) ?(?:min|mins|minutes)\b|ages|a long time|wont stop|unresponsive)"),),
    ],
    "poisoning": [
        (_p(r"(?:took|taken|take|ate|eaten|swallowed|had|taking|drank|got into) .{0,25}\b" + _MANY + r"\b.{0,30}" + _PILLS,
            r"(?:took|taken|ate|eaten|swallowed|had|taking) (?:like |about |maybe )?(?:\d+|two|three|four|five) (?:boxes|packs|packets|bottles|strips|tubs)",
            r"(?:took|taken|ate|eaten|swallowed|had|taking) (?:a |an |the )?(?:whole |full |entire )?(?:pack|packet|box|bottle|handful|load|lot|strip|tub|bunch|heap|pile|fistful)s? (?:of )?",
            r"(?:took|taken|ate|swallowed) all (?:of )?(?:my|her|his|the|their)", r"(?:taken|took|had|done|has|have) an overdose",
            r"overdosed", r"an overdose of", r"double[- ]?dos\w+", r"too many (?:pills|tablets|of (?:my|his|her) \w+)",
            r"got into (?:my|the|her|his) (?:pills|tablets|medicine|meds)", r"(?:been|was|were|got|is|has been) poisoned",
            r"double (?:my|his|her|their|the) (?:\w+ )?dose", r"(?:dont|do not|not sure|no idea) (?:know )?how many",
            r"(?:found|got into|got hold of) (?:my|his|her|the|their|some) (?:\w+ ){0,2}(?:tablets|pills|medicine|meds|medication)"),),
        (_p(r"(?:battery|batteries|magnets?|bleach|chemical|cleaner|pod|capsule|tablets?|pills?|coin)\W+(?:\w+\W+){0,8}(?:in (?:his|her|their|my) mouth|(?:cant|cannot|couldnt) find)",
            r"put .{0,30}(?:battery|batteries|magnet|bleach|pills|tablets|coin|pod) in (?:his|her|their) mouth",
            r"(?:mouth|breath|lips) (?:smells|tastes) of", r"(?:open|empty) (?:bottle|packet|pack|box) of"),),
        # Child and accidental ingestions (poison-centre advice: never wait for symptoms).
        (_p(r"(?:swallowed|swallow|drank|drunk|drink|ate|eaten|eat|bit into|bitten|chewed|licked|sucked|got into|has had|had some)"
            r" .{0,40}(?:bleach|batter(?:y|ies)|magnets?|poison|dishwasher|laundry|detergent|drain|oven cleaner|"
            r"antifreeze|anti-freeze|weed ?killer|pesticide|white spirit|paraffin|lamp oil|turps|berries|mushrooms?|"
            r"cleaner|cleaning|e-?liquid|vape|nicotine|methanol|caustic|acid|lye|washing (?:up )?liquid|"
            r"dishwasher|pills|tablets|medicine|meds|perfume|aftershave|mouthwash|sanitiser|sanitizer|alcohol gel|nail polish|"
            r"essential oil|lighter fluid|petrol|gasoline|kerosene|bathroom|toilet)"),),
        (_p(r"carbon monoxide", r"\bco (?:alarm|detector)"), _p(r"alarm", r"detector", r"headache", r"sleepy", r"dizz\w+", r"sick")),
    ],
    "bleeding": [
        (_p(r"(?:bleeding|blood) (?:wont|will not|doesnt|does not|isnt|is not|hasnt|cant) (?:stop|slow)",
            r"(?:cant|cannot|unable to|wont) stop (?:the )?bleeding", r"still bleeding",
            r"(?:heavy|severe|profuse|uncontrol\w+|massive|spurting|gushing|pouring) bleed\w*",
            r"bleeding (?:heavily|profusely|a lot|badly|everywhere)", r"(?:spurting|pumping|gushing|pouring) (?:out )?(?:blood|out)",
            r"blood (?:is )?(?:spurting|pumping|gushing|pouring)",
            r"(?:vomit\w*|throw\w* up|puk\w*(?: up)?|being sick|cough\w*(?: up)?|spitting(?: up)?|bringing up|sick) (?:up )?(?:some |lots of |a lot of |fresh |bright red )?blood",
            r"coffee grounds", r"(?:lot|lots|pool|loads|cup|cupful) of blood", r"haematemesis|hematemesis",
            r"stabbed", r"\bshot\b", r"gunshot", r"nose ?bleed .{0,40}(?:hour|wont stop|will not stop)",
            r"(?:vomit\w*|threw|throw\w*|puk\w*|sick|cough\w*|spit\w*|bringing)\W+(?:\w+\W+){0,3}blood", r"blood in (?:my|his|her|the) (?:vomit|sick)",
            r"(?:vomit|sick) (?:has|had|with) blood", r"blood\W+(?:\w+\W+){0,3}(?:was sick|being sick|vomit\w*|threw up|throwing up|coughed|coughing)", r"(?:pouring|gushing|streaming|covered|soaked) (?:with|in) blood", r"blood everywhere",
            r"chainsaw", r"machete", r"(?:deep|big|huge|large|gaping) (?:cut|gash|wound)s?\W+(?:\w+\W+){0,6}(?:bleed\w*|blood|bone|fat)"),),
        (_p(r"(?:black|tarry|tar)\b.{0,25}(?:poo|poop|stool|stools|bowel|motion)", r"(?:poo|poop|stools?|motions?) .{0,20}(?:black|tar)\b",
            r"(?:poo|poop|stool|motion)\w*\W+(?:\w+\W+){0,2}black",
            r"blood (?:in|from) (?:my|his|her) (?:poo|stool|bottom|back passage)", r"melaena|melena"),
         _p(_FAINT[3:-1], r"pale", r"weak", r"blood thinners?", r"warfarin", r"lots", r"a lot")),
    ],
    "infant": [
        (_p(r"(?:\d+|a|one|two|three|four|five|six|seven|eight|nine|ten|few) (?:day|days|week|weeks|wk|wks)[- ]old", r"newborn",
            r"(?:[12]|one|two) (?:month|months|mth|mo)[- ]old", r"under (?:3|three) months"),
         _p(_FEVER[3:-1], r"temp\w*", r"floppy", r"sleepy", r"hard to wake", r"not feeding", r"wont feed", r"vomit\w*", r"blue",
            r"breathing", r"rash", r"cry\w*", r"pale", r"hot", r"wont (?:take|drink|have) (?:a |the |his |her |any )?(?:bottle|feed|milk|breast)",
            r"not (?:taking|drinking) (?:a |the |his |her |any )?(?:bottle|feeds?|milk)")),
        (_p(r"floppy", r"limp and", r"high[- ]pitched (?:cry|scream)", r"bulging (?:soft spot|fontanelle)",
            r"(?:baby|newborn|infant|little one|toddler)\w* (?:is |has been |seems )?(?:very |really )?(?:limp|unresponsive|hard to wake|not feeding|wont feed|not waking)"),),
    ],
    "meningitis": [
        (_p(r"stiff neck", r"neck (?:is |feels )?stiff", r"neck stiffness", r"light hurts", r"(?:hurts|sensitive) to light",
            r"cant (?:look at|stand|bear) (?:the )?light"),
         _p(_FEVER[3:-1], r"headache", r"vomiting", r"confus\w+", r"rash")),
        (_p(r"rash (?:that )?(?:doesnt|does not|wont|dont|didnt|isnt|will not) (?:fade|go away|disappear|blanch)",
            r"(?:spots|rash|marks|blotches) (?:that )?(?:dont|doesnt|wont|do not|does not) (?:fade|go|disappear|blanch)",
            r"non[- ]?blanching", r"(?:glass|tumbler) (?:test|on it|over it)", r"purple (?:spots|rash|blotches|dots)",
            r"(?:tiny|small|pin ?prick) (?:red |purple |dark )?(?:dots|spots)\W+(?:\w+\W+){0,4}(?:fever|temp)",
            r"(?:fever|temp\w*)\W+(?:\w+\W+){0,6}(?:tiny|small|pin ?prick) (?:red |purple |dark )?(?:dots|spots)"),),
        # Sepsis (NHS: slurred speech or confusion, mottled skin, breathlessness, no urine, "feel like I'm going to die").
        (_p(r"mottled", r"blotchy skin", r"skin (?:is )?(?:blue|pale|blotchy|mottled)"),),
        (_p(r"infection", r"uti", r"sepsis", _FEVER[3:-1], r"temp", r"shiver\w*", r"operation", r"surgery", r"wound"),
         _p(r"confus\w+", r"not making sense", r"breathing (?:really |very )?fast", r"heart (?:is )?racing", r"(?:not|havent|hasnt) (?:peed|weed|passed urine|urinated)",
            r"going to die", r"cold (?:hands|feet)", r"mottled", r"blue-?ish")),
        (_p(r"(?:feel|feels|feeling) like (?:im|i am|hes|shes|i) (?:going to|gonna) die"),),
    ],
    "pregnancy": [
        (_p(r"pregnan\w*", r"(?:im|i am|shes|she is|at) \d{1,2} ?(?:weeks|wks|wk)\b", r"\d{1,2} weeks (?:pregnant|gestation)",
            r"(?:just )?had (?:my|the|a|her) baby", r"gave birth", r"post[- ]?partum", r"waters (?:broke|have broken|went|breaking)"),
         # Not any pain, swelling or headache: back ache, swollen ankles and mild headaches are common in pregnancy.
         _p(r"(?<!gums )(?<!gum )(?<!nose )bleed\w*", r"blood(?! pressure| tests?| sugar| type| group)",
            r"(?:stomach|tummy|period[- ]like|abdominal|belly|bad|severe) cramp\w*", r"cramp\w* (?:in|and) (?:my |her )?(?:tummy|stomach|belly)",
            r"flashing lights", r"blurr\w+ vision", r"vision (?:changes|problems|is blurr\w*)",
            r"(?:severe|bad|sharp|constant|terrible|agonising|stomach|tummy|abdominal|belly|pelvic|shoulder|side)\W+(?:\w+\W+){0,2}pain",
            r"pain\W+(?:\w+\W+){0,3}(?:one side|side|shoulder|tummy|stomach|belly|abdomen|wont go)",
            r"(?:severe|bad|terrible|worst|sudden) (?:\w+ )?headache", r"headache\W+(?:\w+\W+){0,4}(?:vision|flashing|swell\w*|swollen)",
            r"(?:not|havent|hasnt|cant|didnt) (?:felt|feel) (?:the )?baby", r"baby (?:isnt|hasnt been|is not|not) moving",
            r"(?:reduced|less|fewer|no) (?:fetal |baby )?movements?", _FAINT[3:-1], r"waters (?:broke|have broken|went)", r"clots",
            r"fits?\b", r"seizure", r"(?:face|hands|fingers)\W+(?:\w+\W+){0,3}(?:swollen|swelling|puffy)", r"sudden swelling", r"soak\w+")),
    ],
    "head-injury": [
        (_p(r"(?:hit|banged|bumped|knocked|smacked|bashed|cracked) (?:his|her|my|their|your|the back of (?:his|her|my)) head",
            r"head (?:injury|injuries|wound)", r"fell .{0,30}head", r"(?:on|onto|to) (?:his|her|my|their) head"),
         _p(r"vomit\w*", r"(?:been|being) sick", r"sick \d+ times", r"knocked out", r"unconscious", r"drowsy", r"confus\w+",
            r"fluid", r"warfarin", r"blood thinners?", r"anticoagulant\w*", r"apixaban", r"rivaroxaban", r"seizure", r"fit\b",
            r"bad headache", r"(?:bleeding|blood) from (?:the |his |her |my )?(?:ear|nose)", r"wont wake", r"sleepy")),
        (_p(r"knocked out", r"hit by (?:a )?(?:car|bus|van|lorry|truck)"),),
        # A high-energy accident (Manchester Triage: significant mechanism of injury) with any injury.
        (_p(r"(?:car|motorbike|motorcycle|bike|road traffic) (?:crash|accident|collision)", r"high speed",
            r"fell (?:off|from) (?:a |the )?(?:ladder|roof|height|balcony|horse|scaffold)"),
         _p(r"hurts?", r"pain\w*", r"bleed\w*", r"blood", r"unconscious", r"neck", r"back", r"head", r"cant (?:move|feel|breathe?)",
            r"tingl\w*", r"numb\w*", r"confus\w+", r"broken", r"trapped")),
    ],
    "heart-rhythm": [
        (_p(r"palpitations?", r"heart (?:is )?(?:racing|pounding|fluttering|thumping|beating (?:really |very |so )?fast)", r"heart rate (?:of |is |at )?(?:1[5-9]\d|2\d\d)",
            r"(?:pounding|racing|beating) at (?:1[5-9]\d|2\d\d)", r"pulse (?:of |is |at )?(?:1[5-9]\d|2\d\d)",
            r"heart\W+(?:\w+\W+){0,3}(?:racing|pounding|fast|crazy|fluttering)"),
         _p(_FAINT[3:-1], r"pass out", r"chest pain", r"short(?:ness)? of breath", r"breathless")),
    ],
    "diabetes": [
        (_p(r"(?:blood )?(?:sugar|glucose|bm|bg)s? (?:is |are |was |of |reading |at |level (?:is |of )?)*(?:[0-2](?:\.\d)?\b|hi\b|lo\b|high\b.{0,20}(?:sick|vomit))",
            r"pear drops", r"fruity", r"ketones? (?:are )?high", r"\bdka\b", r"hypo\b"),),
        (_p(r"diabetic", r"diabetes", r"type 1", r"insulin"),
         _p(r"sweat\w*", r"confus\w+", r"not making (?:any )?sense", r"drowsy", r"unconscious", r"vomit\w*", r"(?:deep|fast) (?:and (?:fast|deep) )?breath\w*",
            r"breathing (?:deep|fast)", r"wont eat", r"fitting")),
    ],
    "burns": [
        (_p(r"(?:boiling|hot) (?:water|oil|fat)", r"scald\w*", r"pulled (?:a |the )?(?:kettle|pan)"), _p(r"onto|over|on (?:him|her|them|my|his)", r"himself|herself|myself|burn", r"face|chest|arm|leg|body")),
        (_p(r"electrocut\w+", r"electric(?:al)? shock", r"power line", r"struck by lightning", r"live wire", r"got a (?:bad |big |nasty )?shock (?:from|off)"),),
        (_p(r"(?:splashed|sprayed|got|squirted) .{0,20}(?:bleach|chemical|acid|cleaner|alkali|oven cleaner|lime|cement) (?:in|into) (?:my|his|her|their|the) eyes?",
            r"chemical (?:burn|in (?:my|his|her) eyes?)"),),
        (_p(r"burns? (?:covers?|over|across|all over)", r"burns? (?:to|on) (?:his|her|my|their) (?:face|chest|hands?|airway|genitals)",
            r"skin is (?:white|leathery|charred|black)", r"(?:white|leathery|charred) skin", r"(?:breathed|breathing) in (?:loads of |a lot of )?(?:smoke|fumes)",
            r"smoke inhalation", r"house fire", r"coughing (?:up )?black",
            r"burn\w*\W+(?:\w+\W+){0,5}(?:face|airway|genitals)\b", r"blister\w* (?:badly|everywhere|all over)",
            r"caught (?:on )?fire", r"(?:on fire|set alight)", r"burns (?:on|to|all over) (?:his|her|my|their) (?:\w+ )?(?:legs?|arms?|back|tummy|stomach|body|chest)"),),
        (_p(r"burn\w*", r"scald\w*"), _p(r"blister\w*", r"deep", r"white", r"large", r"huge", r"severe", r"charred", r"peeling", r"skin (?:came|coming) off")),
        (_p(r"(?:hot|boiling) (?:tea|coffee|water|oil|drink|liquid|soup|fat)"), _p(r"chest", r"face", r"blister\w*", r"neck", r"body", r"baby", r"toddler")),
    ],
    "abdomen": [
        (_p(r"(?:sudden|severe|agonising|agonizing|excruciating|unbearable|worst|bad)\w* .{0,20}(?:pain|ache)\w* .{0,10}(?:testicle|testes|testicular|balls|scrotum|groin)",
            r"(?:testicle|testicular|balls|scrotum)\w* .{0,30}(?:sudden|severe|agonis|agoniz|swollen|unbearable)",
            r"(?:stomach|abdomen|belly|tummy) (?:is |feels |went )?(?:rock |really |very )?(?:hard|rigid)", r"rigid (?:abdomen|stomach|belly|tummy)",
            r"(?:worst|unbearable|agonising|agonizing|excruciating|severe) (?:abdominal|stomach|tummy|belly) (?:pain|ache)",
            r"(?:abdominal|stomach|tummy|belly) pain .{0,30}(?:unbearable|agonising|agonizing|excruciating|worst)",
            r"pain is unbearable"),),
        (_p(r"(?:severe|really bad|very bad|agonising|agonizing|excruciating|terrible) (?:\w+ )?(?:pain|ache)"),
         _p(r"vomit\w*", r"(?:cant|cannot|unable to) (?:walk|stand|move)", r"(?:being|been) sick", r"fever", r"rigid", r"hard")),
    ],
    "spine": [
        (_p(r"(?:numb|no feeling|cant feel|tingling)\w* .{0,30}(?:bum|buttocks|between (?:my|his|her) legs|saddle|genitals|privates)",
            r"saddle (?:numbness|anaesthesia|anesthesia)", r"(?:lost|losing|loss of) control of (?:my |his |her )?(?:bladder|bowels)",
            r"(?:cant|cannot|unable to) control (?:my |his |her )?(?:bladder|bowels|wee|pee)"),),
        (_p(r"back pain", r"(?:back|neck) (?:hurts|is painful)"),
         _p(r"cant (?:pee|wee|urinate)", r"wet (?:my|him|her)self", r"(?:lost|losing|loss of) control", r"tingling", r"numb\w*", r"cant move")),
    ],
    "environment": [
        (_p(r"ice cold", r"hypotherm\w*", r"found (?:him|her|them) in the (?:snow|cold|water)", r"out in the (?:cold|snow)"),
         _p(r"mumbl\w*", r"shiver\w*", r"stopped shivering", r"barely breathing", r"not breathing", r"unresponsive", r"confus\w+", r"drowsy", r"wont wake", r"slurr\w+", r"breathing")),
        (_p(r"stopped sweating", r"heat ?stroke", r"(?:hot|overheated) and confused", r"confused .{0,20}(?:hot|heat)"),),
        (_p(r"(?:pulled|dragged|got|fished) (?:him|her|them|my \w+|out) .{0,20}(?:out of|from) (?:the )?(?:pool|water|sea|river|lake|bath)",
            r"(?:nearly|almost) drowned", r"drowning", r"under ?water for", r"(?:fell|fallen|slipped) (?:in|into) (?:the |a )?(?:pond|pool|river|sea|canal|lake|bath)"),),
    ],
}

NOTICES: dict[str, tuple[str, str]] = {
    "suicide": ("If you are thinking about suicide or harming yourself, please reach out now",
                "Call or text 988 (US and Canada), call 116 123 (Samaritans, UK and Ireland), contact a local crisis "
                "line, or " + EMERGENCY + " if you are in immediate danger or have already taken something or hurt "
                "yourself. You are not alone."),
    "unresponsive": ("Someone unresponsive, not breathing normally or very hard to wake is an emergency",
                     _CALL + " now; the dispatcher will guide you through first aid and CPR."),
    "breathing": ("Severe difficulty breathing, choking, or blue or grey lips is an emergency",
                  _CALL + " now. For choking, use back blows and abdominal (or, for a baby, chest) thrusts."),
    "cardiac": ("Chest pain with breathlessness, sweating or pain spreading to the arm, jaw or back can be a heart attack "
                "or a torn aorta", "If this is happening now, " + EMERGENCY + ". Do not drive yourself to hospital."),
    "stroke": ("Face drooping, arm or leg weakness, slurred speech, sudden loss of vision or a sudden severe headache can "
               "be a stroke (FAST)", "Time matters: if these signs are present now, " + EMERGENCY + " and note when they started."),
    "anaphylaxis": ("Swelling of the throat, tongue or lips, or trouble breathing after an allergen or a sting, can be "
                    "anaphylaxis", "Use an adrenaline (epinephrine) auto-injector if one is available and " + EMERGENCY + "."),
    "seizure": ("A seizure lasting more than 5 minutes, repeated seizures, a first seizure or not waking up afterwards "
                "is an emergency", _CALL + ". Do not put anything in the mouth; time the seizure and move hard objects away."),
    "poisoning": ("An overdose, or a swallowed poison, button battery, magnet or household chemical, needs urgent help "
                  "even when the person seems well", _CALL + " or your poison control centre (1-800-222-1222 in the US, "
                  "NHS 111 in the UK) now; do not make them vomit, and keep the packet."),
    "bleeding": ("Heavy bleeding that will not stop, vomiting or coughing up blood, or black stools with dizziness is "
                 "an emergency", "Press firmly on a wound with a clean cloth and " + EMERGENCY + "."),
    "infant": ("A baby under 3 months with a fever, or a baby or child who is floppy, very hard to wake or not feeding, "
               "needs urgent care", _CALL + " or go to the emergency department now."),
    "meningitis": ("Fever with a stiff neck, a rash that does not fade under a glass, or confusion, mottled skin and "
                   "fast breathing with an infection can be meningitis or sepsis", "Get urgent medical help now: " + EMERGENCY + "."),
    "pregnancy": ("Bleeding, severe pain, a severe headache with vision changes, waters breaking early or fewer baby "
                  "movements in pregnancy (or heavy bleeding after birth) need urgent care",
                  "Call your maternity unit or " + EMERGENCY + " now."),
    "head-injury": ("A head injury with vomiting, drowsiness, a loss of consciousness, fluid from the nose or ears, or on "
                    "blood thinners, or a high-energy accident, needs urgent assessment",
                    _CALL + " or go to the emergency department now; do not move someone who may have a neck injury."),
    "heart-rhythm": ("A racing or pounding heart with fainting, dizziness, chest pain or breathlessness can be a dangerous "
                     "heart rhythm", "If this is happening now, " + EMERGENCY + "."),
    "diabetes": ("Very low or very high blood sugar with confusion, drowsiness, vomiting or deep fast breathing is an "
                 "emergency", "If the person is awake and can swallow, give fast-acting sugar for a low; otherwise " + EMERGENCY + "."),
    "burns": ("A large or deep burn, an electrical or chemical burn, or breathing in smoke is an emergency",
              "Cool a burn under running water for 20 minutes, rinse chemicals out of the eye with water, and " + EMERGENCY + "."),
    "abdomen": ("Sudden severe abdominal or testicular pain, or a rigid abdomen, needs urgent care",
                _CALL + " or go to the emergency department now."),
    "spine": ("Back pain with numbness between the legs or loss of bladder or bowel control can be spinal cord compression "
              "(cauda equina)", "Go to the emergency department now or " + EMERGENCY + "."),
    "environment": ("Someone very cold and drowsy, hot and confused, or pulled from water is an emergency",
                    _CALL + " now; move them somewhere safe and warm (or cool) while you wait."),
}

# A negation shortly before a sign cancels it: "no chest pain", "not suicidal", "without vomiting".
_NEGATION = re.compile(r"\b(?:no|not|without|denies|denied|never|nor|negative for|isnt|doesnt|didnt|hasnt|havent)\b"
                       r"(?:\W+\w+){0,3}\W*$")
# An exam item: a vignette ("A 65-year-old man presents with...") or a question with options ...
_EXAM = re.compile(
    r"which of the following|\bwhich (?:drug|investigation|artery|finding|organism|antibiotic|test|nerve|vessel|poison|"
    r"electrolyte|is the|is most)\b|most (?:likely|appropriate|common|important)\b|next (?:best )?(?:step|investigation)|"
    r"\bpresents? (?:with|to)\b|\bpresented with\b|\bis brought\b|\busmle\b|\bmcq\b|\bplab\b|\bfirst[- ]line\b|\bantidote\b|"
    r"\bdiscriminators?\b|\b[a-e]\) |^an? \d+[- ](?:year|month|week|day)s?[- ]old\b|^an? (?:patient|man|woman|child|boy|girl|infant)\b|"
    r"what (?:is|are) the (?:best |most |first |next |initial |likely |immediate )*(?:diagnosis|management|antidote|priority|"
    r"treatment|cause|investigation|organism|rhythm)|\bwhat (?:investigation|drug|test|antibiotic|organism|poison|rhythm)\b|"
    r"how is (?:this|it) (?:classified|managed|treated)|what does this represent|what must be")
# ... or a general question (how/why/what ...) ...
_QUESTION = re.compile(r"^(?:how|why|what|when|which|explain|describe|define|list|can you explain|"
                       r"is it (?:safe|true|normal|possible)|does|do|are|is there|can|tell me about)\b")
# ... is about medicine, not about someone now, unless it speaks of the writer or someone with them,
_PERSONAL = re.compile(r"\b(?:i|ive|me|my|myself|mine|we|our|ours|us|you|youre|your|youve|yours|hes|shes|theyre)\b")
# or (for a general question) of something happening now.
_NOW = re.compile(r"\b(?:help|urgent|right now|just now|ago|tonight|at the moment|currently)\b|what (?:to|do|should|can) (?:i |we )?do\b")


# Only the start of a very long message is read: someone describing an emergency writes a few lines, and the
# rules cost about 20 µs a character (a pasted 40,000-character document would stall the chat for most of a second).
_LONGEST = 10_000


def _normal(text: str) -> str:
    """Lower case on one line, apostrophes dropped ("can't" -> "cant"), so patterns match how people type."""
    text = text.lower().replace("\u2019", "'").replace("'", "").replace("`", "")
    return " ".join(text.split())


def _hits(pattern: re.Pattern[str], text: str) -> bool:
    """True if ``pattern`` occurs in ``text`` at least once without a negation just before it."""
    for match in pattern.finditer(text):
        before = text[max(0, match.start() - 40) : match.start()]
        if not _NEGATION.search(before):
            return True
    return False


def _about_medicine(text: str) -> bool:
    """A question about medicine in general (an exam item, a mechanism), not about someone now."""
    if _PERSONAL.search(text):
        return False
    return bool(_EXAM.search(text)) or (bool(_QUESTION.search(text)) and not _NOW.search(text))


def red_flags(text: str) -> list[RedFlag]:
    """Every emergency category the message matches, most urgent first (may be empty)."""
    t = _normal(text[:_LONGEST])
    if not t or _about_medicine(t):
        return []
    found = []
    for category, signs in SIGNS.items():
        if any(all(_hits(part, t) for part in sign) for sign in signs):
            title, advice = NOTICES[category]
            found.append(RedFlag(category, title, advice))
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
