"""Writes ``quickstart_questions.jsonl``: held-out questions of the kinds users type first.

Five kinds, written here by hand (facts, definitions, short how-to, yes/no with a reason)
or generated with a fixed seed (arithmetic in words). Every answer is checkable by
keywords (whole words, any of them); a yes/no item is scored by the first "yes" or "no"
in the answer (``first_of``). No subject here is in the default aggregator's training
data (``tests/eval/test_quickstart_set.py`` checks it against the recipe's own
training questions). Run it again to rewrite the file; the output is deterministic.

    python recipes/data/quickstart_questions.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from aft_sdk.eval.facts import in_words, same_facts

HERE = Path(__file__).parent
OUT = HERE / "quickstart_questions.jsonl"
# Kept apart: the shipped adapter's training questions and the older held-out set.
TRAINED = HERE.parent / "results" / "default_aggregator" / "data" / "questions.jsonl"
EASY = HERE / "easy_questions.jsonl"


def excluded_subjects() -> set[str]:
    """Subjects of the shipped adapter's training questions and of the older held-out set."""
    return {json.loads(line)["subject"].lower() for path in (TRAINED, EASY)
            for line in path.read_text().splitlines() if line.strip()}

# (subject, question, keywords)
FACTS = [
    ("planets", "How many planets are in our solar system?", ["8", "eight"]),
    ("largest-planet", "What is the largest planet in our solar system?", ["Jupiter"]),
    ("red-planet", "Which planet is known as the Red Planet?", ["Mars"]),
    ("hottest-planet", "What is the hottest planet in our solar system?", ["Venus"]),
    ("ringed-planet", "Which planet is most famous for its rings?", ["Saturn"]),
    ("closest-planet", "Which planet is closest to the Sun?", ["Mercury"]),
    ("earth-satellite", "What natural satellite orbits the Earth?", ["Moon"]),
    ("breathe-gas", "What gas do people need to breathe to stay alive?", ["oxygen"]),
    ("symbol-gold", "What is the chemical symbol for gold?", ["Au"]),
    ("symbol-iron", "What is the chemical symbol for iron?", ["Fe"]),
    ("bones", "How many bones are in the adult human body?", ["206"]),
    ("pump-blood", "Which organ pumps blood around the body?", ["heart"]),
    ("breathe-organ", "Which organs do humans use to breathe?", ["lungs", "lung"]),
    ("adult-teeth", "How many teeth does an adult human usually have?", ["32", "thirty-two"]),
    ("hardest", "What is the hardest natural substance?", ["diamond", "diamonds"]),
    ("largest-mammal", "What is the largest mammal on Earth?", ["blue whale"]),
    ("tallest-animal", "What is the tallest animal in the world?", ["giraffe"]),
    ("fastest-animal", "What is the fastest land animal?", ["cheetah"]),
    ("insect-legs", "How many legs does an insect have?", ["6", "six"]),
    ("octopus-hearts", "How many hearts does an octopus have?", ["3", "three"]),
    ("caterpillar", "What does a caterpillar turn into?", ["butterfly", "butterflies", "moth"]),
    ("panda-food", "What do pandas mainly eat?", ["bamboo"]),
    ("peace-bird", "Which bird is a symbol of peace?", ["dove"]),
    ("hot-desert", "What is the largest hot desert in the world?", ["Sahara"]),
    ("africa-river", "What is the longest river in Africa?", ["Nile"]),
    ("tallest-mountain", "What is the tallest mountain in the world?", ["Everest"]),
    ("ocean-africa-australia", "Which ocean lies between Africa and Australia?", ["Indian"]),
    ("ocean-europe-america", "Which ocean lies between Europe and North America?", ["Atlantic"]),
    ("continents", "How many continents are there?", ["7", "seven"]),
    ("largest-continent", "What is the largest continent?", ["Asia"]),
    ("sahara-continent", "On which continent is the Sahara Desert?", ["Africa"]),
    ("capital:Norway", "What is the capital of Norway?", ["Oslo"]),
    ("capital:Sweden", "What is the capital of Sweden?", ["Stockholm"]),
    ("capital:Portugal", "What is the capital of Portugal?", ["Lisbon"]),
    ("capital:Greece", "What is the capital of Greece?", ["Athens"]),
    ("capital:Ireland", "What is the capital of Ireland?", ["Dublin"]),
    ("capital:Austria", "What is the capital of Austria?", ["Vienna"]),
    ("capital:Denmark", "What is the capital of Denmark?", ["Copenhagen"]),
    ("capital:Finland", "What is the capital of Finland?", ["Helsinki"]),
    ("capital:Cuba", "What is the capital of Cuba?", ["Havana"]),
    ("capital:Hungary", "What is the capital of Hungary?", ["Budapest"]),
    ("capital:Belgium", "What is the capital of Belgium?", ["Brussels"]),
    ("capital:Switzerland", "What is the capital of Switzerland?", ["Bern", "Berne"]),
    ("capital:New Zealand", "What is the capital of New Zealand?", ["Wellington"]),
    ("capital:Chile", "What is the capital of Chile?", ["Santiago"]),
    ("capital:Netherlands", "What is the capital of the Netherlands?", ["Amsterdam"]),
    ("capital:Scotland", "What is the capital of Scotland?", ["Edinburgh"]),
    ("kangaroo-country", "Which country is home to the kangaroo?", ["Australia"]),
    ("giza", "In which country are the pyramids of Giza?", ["Egypt"]),
    ("eiffel", "In which city is the Eiffel Tower?", ["Paris"]),
    ("great-wall", "In which country is the Great Wall?", ["China"]),
    ("colosseum", "In which city is the Colosseum?", ["Rome"]),
    ("liberty", "In which city is the Statue of Liberty?", ["New York"]),
    ("yen", "What currency is used in Japan?", ["yen"]),
    ("dollar", "What currency is used in the United States?", ["dollar", "dollars"]),
    ("language:Mexico", "What language is mainly spoken in Mexico?", ["Spanish"]),
    ("language:Germany", "What language is spoken in Germany?", ["German"]),
    ("romeo", "Who wrote Romeo and Juliet?", ["Shakespeare"]),
    ("mona-lisa", "Who painted the Mona Lisa?", ["Leonardo", "da Vinci"]),
    ("moon-walk", "Who was the first person to walk on the Moon?", ["Armstrong"]),
    ("relativity", "Who developed the theory of relativity?", ["Einstein"]),
    ("apple-gravity", "Which scientist is famous for an apple falling and the law of gravity?",
     ["Newton"]),
    ("telephone", "Who is credited with inventing the telephone?", ["Bell"]),
    ("first-president", "Who was the first President of the United States?", ["Washington"]),
    ("ww2-end", "In which year did World War II end?", ["1945"]),
    ("moon-landing", "In what year did people first land on the Moon?", ["1969"]),
    ("iceberg-ship", "Which ship sank in 1912 after hitting an iceberg?", ["Titanic"]),
    ("harry-potter", "Who wrote the Harry Potter books?", ["Rowling"]),
    ("soccer-players", "How many players does a soccer team have on the field?", ["11", "eleven"]),
    ("guitar-strings", "How many strings does a standard guitar have?", ["6", "six"]),
    ("piano-keys", "How many keys does a standard piano have?", ["88", "eighty-eight"]),
    ("wimbledon", "What sport is played at Wimbledon?", ["tennis"]),
    ("rainbow", "How many colours are in a rainbow?", ["7", "seven"]),
    ("mix-blue-yellow", "What colour do you get by mixing blue and yellow?", ["green"]),
    ("mix-red-white", "What colour do you get by mixing red and white?", ["pink"]),
    ("mix-red-yellow", "What colour do you get by mixing red and yellow?", ["orange"]),
    ("leap-year", "How many days are in a leap year?", ["366"]),
    ("year-days", "How many days are in a normal year?", ["365"]),
    ("shortest-month", "Which month has the fewest days?", ["February"]),
    ("leap-february", "How many days does February have in a leap year?", ["29", "twenty-nine"]),
    ("boil-f", "What is the boiling point of water in degrees Fahrenheit?", ["212"]),
    ("guacamole", "What is the main ingredient of guacamole?", ["avocado", "avocados"]),
    ("bread", "What is the main ingredient of bread?", ["flour", "wheat"]),
    ("raisins", "Which fruit is dried to make raisins?", ["grapes", "grape"]),
    ("bees-collect", "What do bees collect from flowers?", ["nectar", "pollen"]),
    ("largest-organ", "What is the largest organ of the human body?", ["skin"]),
    ("sun-vitamin", "Which vitamin does sunlight help the body make?", ["vitamin D"]),
    ("pull-force", "What force pulls objects toward the ground?", ["gravity"]),
    ("atom-centre", "What is the centre of an atom called?", ["nucleus"]),
    ("plants-give", "What gas do plants give off in sunlight?", ["oxygen"]),
]

DEFINITIONS = [
    ("lamb", "What do we call a young sheep?", ["lamb"]),
    ("calf", "What do we call a baby cow?", ["calf"]),
    ("foal", "What do we call a baby horse?", ["foal"]),
    ("joey", "What do we call a baby kangaroo?", ["joey"]),
    ("tadpole", "What do we call a baby frog?", ["tadpole"]),
    ("duckling", "What do we call a baby duck?", ["duckling"]),
    ("cub", "What do we call a baby bear?", ["cub"]),
    ("pack", "What do we call a group of wolves?", ["pack"]),
    ("school", "What do we call a group of fish swimming together?", ["school", "shoal"]),
    ("herd", "What do we call a group of cows?", ["herd"]),
    ("swarm", "What do we call a large group of flying bees?", ["swarm"]),
    ("pilot", "What do we call a person who flies an aeroplane?", ["pilot"]),
    ("vet", "What do we call a doctor who treats sick animals?",
     ["vet", "veterinarian", "veterinary surgeon"]),
    ("dentist", "What do we call a doctor who looks after teeth?", ["dentist"]),
    ("author", "What do we call a person who writes books?", ["author", "writer", "novelist"]),
    ("chef", "What do we call a person who cooks in a restaurant?", ["chef", "cook"]),
    ("farmer", "What do we call a person who grows crops and raises animals?", ["farmer"]),
    ("architect", "What do we call a person who designs buildings?", ["architect"]),
    ("firefighter", "What do we call a person whose job is to put out fires?",
     ["firefighter", "fireman", "firefighters"]),
    ("postman", "What do we call a person who delivers letters?",
     ["postman", "mail carrier", "letter carrier", "postal worker", "mailman", "postwoman"]),
    ("astronomer", "What do we call a scientist who studies the stars and planets?",
     ["astronomer"]),
    ("geologist", "What do we call a scientist who studies rocks?", ["geologist"]),
    ("surgeon", "What do we call a doctor who performs operations?", ["surgeon"]),
    ("herbivore", "What do we call an animal that eats only plants?", ["herbivore", "herbivores"]),
    ("carnivore", "What do we call an animal that eats only meat?", ["carnivore", "carnivores"]),
    ("omnivore", "What do we call an animal that eats both plants and meat?",
     ["omnivore", "omnivores"]),
    ("triangle", "What do we call a shape with three sides?", ["triangle"]),
    ("pentagon", "What do we call a shape with five sides?", ["pentagon"]),
    ("hexagon", "What do we call a shape with six sides?", ["hexagon"]),
    ("octagon", "What do we call a shape with eight sides?", ["octagon"]),
    ("decade", "What is the word for a period of ten years?", ["decade"]),
    ("century", "What is the word for a period of one hundred years?", ["century"]),
    ("millennium", "What is the word for a period of one thousand years?", ["millennium"]),
    ("synonym", "What do we call a word that means the same as another word?", ["synonym"]),
    ("antonym", "What do we call a word that means the opposite of another word?",
     ["antonym", "opposite"]),
    ("adjective", "What do we call a word that describes a noun, like 'red' or 'tall'?",
     ["adjective"]),
    ("verb", "What do we call a word for an action, like 'run' or 'jump'?", ["verb"]),
    ("noun", "What do we call a word for a person, place or thing?", ["noun"]),
    ("fable", "What do we call a short story, often with animals, that teaches a lesson?",
     ["fable"]),
    ("island", "What do we call a piece of land with water all around it?", ["island"]),
    ("glacier", "What do we call a huge, slowly moving mass of ice?", ["glacier"]),
    ("volcano", "What do we call a mountain that can erupt with lava?", ["volcano"]),
    ("equator", "What is the imaginary line around the middle of the Earth called?", ["equator"]),
    ("thermometer", "What instrument measures temperature?", ["thermometer"]),
    ("telescope", "What instrument do we use to look at distant stars?", ["telescope"]),
    ("microscope", "What instrument do we use to see very small things like cells?",
     ["microscope"]),
    ("photosynthesis", "What is the process called by which plants make food from sunlight?",
     ["photosynthesis"]),
    ("nest", "What do we call the home a bird builds for its eggs?", ["nest"]),
    ("hive", "What do we call the home of a colony of bees?", ["hive", "beehive"]),
    ("burrow", "What do we call the hole in the ground where a rabbit lives?",
     ["burrow", "warren"]),
    ("enormous", "What does the word 'enormous' mean?",
     ["huge", "very large", "very big", "gigantic", "immense", "extremely large"]),
    ("ancient", "What does the word 'ancient' mean?", ["very old", "old"]),
    ("rapid", "What does the word 'rapid' mean?", ["fast", "quick", "quickly", "speedy"]),
    ("fragile", "What does the word 'fragile' mean?",
     ["easily broken", "breaks easily", "delicate", "easy to break", "easily damaged"]),
    ("nocturnal", "What does it mean when an animal is nocturnal?", ["night"]),
    ("vegetarian", "What is a vegetarian?", ["meat"]),
    ("dictionary", "What is a dictionary used for?", ["meaning", "meanings", "definition",
                                                       "definitions", "spelling"]),
    ("rain", "What do we call water that falls from clouds as drops?", ["rain", "precipitation"]),
    ("orphan", "What do we call a child whose parents have died?", ["orphan"]),
    ("bilingual", "What do we call a person who speaks two languages fluently?", ["bilingual"]),
]

HOW_TO = [
    ("ice", "How do you make ice at home?", ["freeze", "freezer", "freezing"]),
    ("tea", "How do you make a cup of tea?", ["hot water", "boil", "boiling", "boiled", "steep"]),
    ("toast", "How do you make toast?", ["toaster", "grill", "heat", "pan", "oven"]),
    ("boil-egg", "How do you boil an egg?", ["water"]),
    ("cross-street", "What should you do before crossing a street?", ["look", "check"]),
    ("candle", "How do you put out a candle?", ["blow", "snuff", "snuffer", "pinch"]),
    ("milk", "How do you keep milk fresh for longer?",
     ["fridge", "refrigerator", "refrigerate", "cold", "cool"]),
    ("hands", "How should you wash your hands?", ["soap"]),
    ("time", "How can you find out what time it is?", ["clock", "watch", "phone"]),
    ("word-meaning", "How do you find out what a word means?", ["dictionary", "look it up"]),
    ("letter", "How do you send a letter by post?", ["stamp", "envelope", "post box", "mailbox"]),
    ("locked-door", "How do you open a locked door?", ["key"]),
    ("paper-plane", "How do you make a paper aeroplane?", ["fold", "folding", "folds"]),
    ("teeth", "How do you keep your teeth healthy?", ["brush", "brushing", "toothbrush"]),
    ("seed", "How do you grow a plant from a seed?", ["soil", "dirt", "water", "sunlight"]),
    ("flat-tyre", "How do you fix a flat bicycle tyre?",
     ["patch", "pump", "inflate", "replace", "inner tube"]),
    ("length", "How do you measure how long a table is?",
     ["tape measure", "ruler", "measuring tape", "meter stick", "metre stick"]),
    ("weigh", "How do you find out how much you weigh?", ["scale", "scales"]),
    ("cut-paper", "What do you use to cut paper?", ["scissors"]),
    ("blackboard", "What do you use to write on a blackboard?", ["chalk"]),
    ("dark", "What can you use to see in the dark?", ["torch", "flashlight", "light", "lamp"]),
    ("dig", "What do you use to dig a hole in the garden?", ["shovel", "spade"]),
    ("nail", "What tool do you use to knock in a nail?", ["hammer"]),
    ("screw", "What tool do you use to turn a screw?", ["screwdriver"]),
    ("keep-dry", "How do you keep dry when it rains?", ["umbrella", "raincoat", "coat", "indoors"]),
    ("nosebleed", "How do you stop a nosebleed?", ["pinch", "press", "lean forward"]),
    ("lemonade", "How do you make lemonade?", ["lemon", "lemons", "lemon juice"]),
    ("shut-down", "How do you turn off a computer?",
     ["shut down", "shutdown", "power button", "turn off", "power off"]),
    ("charge-phone", "How do you charge a phone?", ["charger", "cable", "plug", "outlet"]),
    ("plant-tree", "How do you plant a tree?", ["hole", "dig"]),
    ("clean-floor", "How do you clean a dirty floor?", ["mop", "sweep", "vacuum", "broom"]),
    ("dry-clothes", "How do you dry wet clothes?", ["dryer", "hang", "line", "sun"]),
    ("rice", "How do you cook rice?", ["water", "boil", "boiling", "simmer"]),
    ("north-compass", "How do you find north with a compass?", ["needle", "points", "arrow"]),
    ("sandwich", "How do you make a sandwich?", ["bread"]),
    ("shoes", "How do you tie your shoelaces?", ["loop", "loops", "knot", "bow", "cross"]),
    ("cake", "How do you check if a cake is done baking?",
     ["toothpick", "skewer", "knife", "inserted", "clean"]),
    ("egg-fresh", "How can you tell if an egg is fresh?", ["water", "float", "floats", "sink",
                                                          "sinks"]),
    ("cut-finger", "How do you treat a small cut on your finger?",
     ["wash", "clean", "bandage", "plaster", "rinse"]),
    ("hot-day", "How do you stay cool on a hot day?",
     ["water", "shade", "fan", "drink", "air conditioning", "swim"]),
    ("make-bed", "How do you make a bed?", ["sheet", "sheets", "pillow", "pillows", "blanket",
                                           "duvet"]),
    ("boil-water", "How do you boil water?", ["heat", "kettle", "stove", "pot"]),
    ("fire-drill", "What should you do if you hear a fire alarm?",
     ["leave", "exit", "evacuate", "get out", "go outside"]),
    ("sunburn", "How do you protect your skin from sunburn?",
     ["sunscreen", "sun cream", "suncream", "sunblock", "shade", "hat"]),
    ("wake-up", "How can you make sure you wake up on time?", ["alarm"]),
]

YES = [
    ("sun-star", "Is the Sun a star?"), ("whale-mammal", "Is a whale a mammal?"),
    ("fish-gills", "Do fish breathe through gills?"), ("ice-floats", "Does ice float on water?"),
    ("earth-round", "Is the Earth round?"), ("plants-light", "Do plants need sunlight to grow?"),
    ("square-rectangle", "Is a square a kind of rectangle?"),
    ("prime-7", "Is 7 a prime number?"), ("even-10", "Is 10 an even number?"),
    ("penguins-swim", "Can penguins swim?"), ("bats-fly", "Can bats fly?"),
    ("gold-metal", "Is gold a metal?"),
    ("pacific-atlantic", "Is the Pacific Ocean bigger than the Atlantic Ocean?"),
    ("moon-orbits", "Does the Moon orbit the Earth?"),
    ("everest-highest", "Is Mount Everest the highest mountain on Earth?"),
    ("need-water", "Do humans need water to survive?"),
    ("english-ltr", "Is English written from left to right?"),
    ("km-longer", "Is a kilometre longer than a metre?"),
    ("year-month", "Is a year longer than a month?"), ("violin", "Is a violin a musical instrument?"),
    ("heart-muscle", "Is the heart a muscle?"),
    ("right-triangle", "Can a triangle have a right angle?"),
    ("trees-oxygen", "Do trees produce oxygen?"),
    ("kilimanjaro", "Is Mount Kilimanjaro in Africa?"), ("dolphin-mammal", "Is a dolphin a mammal?"),
    ("earth-orbits", "Does the Earth go around the Sun?"),
    ("stars-night", "Can you see stars on a clear night?"),
    ("compare:99:100", "Is 100 bigger than 99?"), ("milk-calcium", "Does milk contain calcium?"),
    ("spider-web", "Do spiders spin webs?"), ("snow-cold", "Is snow cold?"),
    ("birds-feathers", "Do birds have feathers?"),
]
NO = [
    ("moon-planet", "Is the Moon a planet?"), ("spider-insect", "Is a spider an insect?"),
    ("breathe-water", "Can humans breathe underwater without equipment?"),
    ("bat-bird", "Is a bat a bird?"), ("sun-planet", "Is the Sun a planet?"),
    ("snake-legs", "Do snakes have legs?"), ("even-9", "Is 9 an even number?"),
    ("prime-15", "Is 15 a prime number?"), ("zero-one", "Is zero greater than one?"),
    ("penguins-fly", "Can penguins fly?"), ("glass-metal", "Is glass a metal?"),
    ("whale-fish", "Is a whale a fish?"), ("nile-europe", "Is the Nile in Europe?"),
    ("carrot-fish", "Is a carrot a kind of fish?"), ("ice-sinks", "Does ice sink in water?"),
    ("sahara-sa", "Is the Sahara Desert in South America?"), ("cows-eggs", "Do cows lay eggs?"),
    ("minute-hour", "Is a minute longer than an hour?"), ("fire-cold", "Is fire cold?"),
    ("circle-polygon", "Is a circle a polygon?"), ("earth-flat", "Is the Earth flat?"),
    ("amazon-africa", "Is the Amazon River in Africa?"),
    ("gram-kilogram", "Is a gram heavier than a kilogram?"),
    ("triangle-four", "Does a triangle have four sides?"),
    ("mars-closer", "Is Mars closer to the Sun than the Earth is?"),
    ("iron-gas", "Is iron a gas at room temperature?"),
    ("jupiter-smaller", "Is Jupiter smaller than the Earth?"),
    ("all-birds-fly", "Can all birds fly?"), ("potato-fruit", "Is a potato a fruit?"),
    ("one-prime", "Is 1 a prime number?"), ("fish-fur", "Do fish have fur?"),
    ("sea-fresh", "Is sea water safe to drink?"),
]
YES_NO_SUFFIXES = [" Answer yes or no, and give a reason.", " Answer yes or no and say why.",
                   " Yes or no? Explain briefly."]

def arithmetic(rng: random.Random, n: int, exclude: set[str]) -> list[tuple[str, str, list[str]]]:
    """Arithmetic in words: operands spelled out or set in a short everyday story."""
    # Each returns (question, answer, subject); the subject is the bare fact in the training
    # data's own form, so a story around "10 - 6" is the same subject as "What is 10 minus 6?".
    def plus(a, b):
        return f"What is {in_words(a)} plus {in_words(b)}?", a + b, f"arith:{a}+{b}"

    def minus(a, b):
        a, b = max(a, b), min(a, b)
        return f"What is {in_words(a)} minus {in_words(b)}?", a - b, f"arith:{a}-{b}"

    def times(a, b):
        return f"What is {in_words(a)} times {in_words(b)}?", a * b, f"arith:{a}*{b}"

    def eat(a, b):
        a, b = max(a, b) + 2, min(a, b)
        return (f"I have {a} apples and I eat {b} of them. How many apples are left?", a - b,
                f"arith:{a}-{b}")

    def packs(a, b):
        return f"A pack holds {a} pens. How many pens are in {b} packs?", a * b, f"arith:{a}*{b}"

    def double(a, b):
        return f"What is double {a + b}?", 2 * (a + b), f"arith:{a + b}*2"

    def half(a, b):
        return f"What is half of {2 * (a + b)}?", a + b, f"arith:{2 * (a + b)}/2"

    def age(a, b):
        return (f"Sam is {a} years old. How old will Sam be in {b} years?", a + b,
                f"arith:{a}+{b}")

    def share(a, b):
        return (f"{in_words(b).capitalize()} friends share {a * b} sweets equally. "
                "How many sweets does each friend get?", a, f"arith:{a * b}/{b}")

    def bus(a, b):
        a, b = max(a, b) + 10, min(a, b)
        return (f"A bus has {a} passengers and {b} get off. How many passengers are still on "
                "the bus?", a - b, f"arith:{a}-{b}")

    def coins(a, b):
        return (f"Tom has {a} coins and finds {b} more. How many coins does he have now?", a + b,
                f"arith:{a}+{b}")

    def legs(a, b):
        return f"How many legs do {a} dogs have altogether?", 4 * a, f"arith:{a}*4"

    templates = [plus, minus, times, eat, packs, double, half, age, share, bus, coins, legs]
    out, seen = [], set()
    while len(out) < n:
        make = templates[len(out) % len(templates)]
        a, b = rng.randint(2, 12), rng.randint(2, 9)
        question, value, subject = make(a, b)
        if subject in seen or same_facts(subject) & exclude:
            continue
        seen.add(subject)
        keys = [str(value)] + ([in_words(value)] if value < 100 else [])
        out.append((subject, question, keys))
    return out


def build(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows: list[dict] = []
    exclude = excluded_subjects()

    def add(kind: str, subject: str, question: str, keywords: list[str], **extra) -> None:
        rows.append({"id": f"qs-{len(rows):03d}", "question": question, "keywords": keywords,
                     "subject": subject, "kind": kind, **extra})

    for subject, question, keywords in FACTS:
        add("fact", subject, question, keywords)
    for subject, question, keywords in arithmetic(rng, 60, exclude):
        add("arithmetic", subject, question, keywords)
    for subject, question, keywords in DEFINITIONS:
        add("definition", subject, question, keywords)
    for subject, question, keywords in HOW_TO:
        add("how-to", subject, question, keywords)
    yes_no = [(s, q, "yes") for s, q in YES] + [(s, q, "no") for s, q in NO]
    rng.shuffle(yes_no)
    for i, (subject, question, answer) in enumerate(yes_no):
        add("yes-no", subject, question + YES_NO_SUFFIXES[i % len(YES_NO_SUFFIXES)], [answer],
            first_of=["yes", "no"])
    return rows


def main() -> None:
    rows = build()
    clash = {r["subject"] for r in rows if same_facts(r["subject"].lower()) & excluded_subjects()}
    if clash:
        raise SystemExit(f"subjects already used in training or the older held-out set: {clash}")
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} questions -> {OUT}")


if __name__ == "__main__":
    main()
