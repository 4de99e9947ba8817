"""The value taxonomy: every value id the project knows, with its definition.

Three basic value systems (after Value Compass): Moral Foundations Theory (``mft.*``, five
foundations), Schwartz's ten basic values (``schwartz.*``) and a safety taxonomy (``safety.*``,
the fourteen harm categories of PKU-SafeRLHF / BeaverTails). Everything else in the project
refers to values by these ids; this module is the only place that defines them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

ValueSystem = Literal["mft", "schwartz", "safety"]
SYSTEMS: tuple[ValueSystem, ...] = ("mft", "schwartz", "safety")


@dataclass(frozen=True, slots=True)
class Value:
    """One value dimension: what a reply may uphold or go against."""

    id: str
    system: ValueSystem
    name: str
    definition: str
    source_labels: tuple[str, ...] = ()
    """Label names that data sets use for this value (FULCRA, SafeRLHF), for the data readers."""


_ALL: tuple[Value, ...] = (
    # Moral Foundations Theory (Haidt & Graham); the five foundations of DeNEVIL.
    Value("mft.care", "mft", "Care / harm",
          "Caring for others and preventing harm: kindness, compassion, protecting the vulnerable; "
          "violated by cruelty, violence, and causing or encouraging suffering."),
    Value("mft.fairness", "mft", "Fairness / cheating",
          "Justice, rights and reciprocity: treating people equally and honestly; violated by "
          "cheating, fraud, exploitation, discrimination and unjust advantage."),
    Value("mft.loyalty", "mft", "Loyalty / betrayal",
          "Standing with one's group, family, team or nation; violated by betrayal, treachery and "
          "abandoning those who rely on you."),
    Value("mft.authority", "mft", "Authority / subversion",
          "Respect for legitimate authority, law, tradition and social order; violated by "
          "lawlessness, disrespect and subverting rightful rules."),
    Value("mft.sanctity", "mft", "Sanctity / degradation",
          "Purity, dignity and what a community holds sacred; violated by degrading, defiling or "
          "treating people or sacred things with contempt."),
    # Schwartz's theory of basic human values.
    Value("schwartz.self_direction", "schwartz", "Self-direction",
          "Independent thought and action: choosing, creating, exploring; respecting others' "
          "autonomy.", ("self-direction", "self direction")),
    Value("schwartz.stimulation", "schwartz", "Stimulation",
          "Excitement, novelty and challenge in life.", ("stimulation",)),
    Value("schwartz.hedonism", "schwartz", "Hedonism",
          "Pleasure and sensuous gratification for oneself.", ("hedonism",)),
    Value("schwartz.achievement", "schwartz", "Achievement",
          "Personal success through demonstrating competence according to social standards.",
          ("achievement",)),
    Value("schwartz.power", "schwartz", "Power",
          "Social status and prestige, control or dominance over people and resources.",
          ("power",)),
    Value("schwartz.security", "schwartz", "Security",
          "Safety, harmony and stability of society, of relationships and of self.",
          ("security",)),
    Value("schwartz.conformity", "schwartz", "Conformity",
          "Restraint of actions likely to upset or harm others and violate social norms.",
          ("conformity",)),
    Value("schwartz.tradition", "schwartz", "Tradition",
          "Respect for and commitment to the customs and ideas of one's culture or religion.",
          ("tradition",)),
    Value("schwartz.benevolence", "schwartz", "Benevolence",
          "Preserving and enhancing the welfare of those with whom one is in frequent personal "
          "contact.", ("benevolence",)),
    Value("schwartz.universalism", "schwartz", "Universalism",
          "Understanding, tolerance and protection for the welfare of all people and of nature.",
          ("universalism",)),
    # Safety taxonomy: the harm categories of PKU-SafeRLHF / BeaverTails.
    Value("safety.violence", "safety", "Violence and incitement",
          "Helping, encouraging or inciting physical harm to people.",
          ("violence,aiding_and_abetting,incitement",)),
    Value("safety.unethical", "safety", "Non-violent unethical behaviour",
          "Helping with lying, manipulation, cheating or other harmful but non-violent conduct.",
          ("non_violent_unethical_behavior",)),
    Value("safety.hate_speech", "safety", "Hate speech and offensive language",
          "Insulting, demeaning or abusive language aimed at people or groups.",
          ("hate_speech,offensive_language",)),
    Value("safety.discrimination", "safety", "Discrimination and stereotypes",
          "Stereotyping or treating people unfairly because of who they are.",
          ("discrimination,stereotype,injustice",)),
    Value("safety.financial_crime", "safety", "Financial and property crime",
          "Helping with theft, fraud, scams, or other crimes against property.",
          ("financial_crime,property_crime,theft",)),
    Value("safety.privacy", "safety", "Privacy violation",
          "Exposing, tracking or collecting personal information without consent.",
          ("privacy_violation",)),
    Value("safety.drugs_weapons", "safety", "Drugs, weapons and banned substances",
          "Helping obtain, make or misuse drugs, weapons or banned substances.",
          ("drug_abuse,weapons,banned_substance",)),
    Value("safety.controversial_topics", "safety", "Controversial topics and politics",
          "One-sided or inflammatory treatment of contested political or social questions.",
          ("controversial_topics,politics",)),
    Value("safety.misinformation", "safety", "Misinformation on ethics, law and safety",
          "False or misleading claims about what is legal, safe or ethical.",
          ("misinformation_regarding_ethics,laws_and_safety",)),
    Value("safety.sexual_content", "safety", "Sexually explicit content",
          "Sexually explicit or adult content where it is not appropriate.",
          ("sexually_explicit,adult_content",)),
    Value("safety.terrorism", "safety", "Terrorism and organised crime",
          "Helping plan, fund or glorify terrorism or organised crime.",
          ("terrorism,organized_crime",)),
    Value("safety.animal_abuse", "safety", "Animal abuse",
          "Helping with or encouraging cruelty to animals.", ("animal_abuse",)),
    Value("safety.self_harm", "safety", "Self-harm",
          "Encouraging or instructing self-injury or suicide.", ("self_harm",)),
    Value("safety.child_abuse", "safety", "Child abuse",
          "Content that endangers, exploits or abuses children.", ("child_abuse",)),
)

VALUES: Mapping[str, Value] = MappingProxyType({v.id: v for v in _ALL})
"""Every value by id, in taxonomy order."""


def get_value(value_id: str) -> Value:
    """The value with this id; a KeyError names the known ids' systems when it is unknown."""
    try:
        return VALUES[value_id]
    except KeyError:
        raise KeyError(f"unknown value id {value_id!r}; ids look like 'mft.care', "
                       f"'schwartz.benevolence', 'safety.violence'") from None


def values_in(system: ValueSystem) -> tuple[Value, ...]:
    """The values of one system, in taxonomy order."""
    return tuple(v for v in _ALL if v.system == system)


def by_source_label(label: str) -> Value | None:
    """The value a data set's label names (case-insensitive), if any."""
    wanted = label.strip().lower()
    for v in _ALL:
        if wanted in v.source_labels:
            return v
    return None


HARM_FOUNDATIONS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "safety.violence": ("mft.care",),
    "safety.unethical": ("mft.fairness", "mft.care"),
    "safety.hate_speech": ("mft.care", "mft.sanctity"),
    "safety.discrimination": ("mft.fairness",),
    "safety.financial_crime": ("mft.fairness",),
    "safety.privacy": ("mft.care", "mft.fairness"),
    "safety.drugs_weapons": ("mft.care",),
    "safety.controversial_topics": ("mft.fairness",),
    "safety.misinformation": ("mft.care",),
    "safety.sexual_content": ("mft.sanctity",),
    "safety.terrorism": ("mft.care", "mft.authority"),
    "safety.animal_abuse": ("mft.care",),
    "safety.self_harm": ("mft.care",),
    "safety.child_abuse": ("mft.care", "mft.sanctity"),
})
"""The Moral Foundations each safety harm category goes against. A prompt that invites a harm
puts these foundations at stake too: the values-at-stake model learns its foundation heads from
them, and the instruction evaluation counts a harm as covered by a principle of the harm's own
value or of one of these foundations (a policy such as ``default`` protects only some harms by
name and the rest through the foundations)."""


def harm_coverage(harm: str) -> frozenset[str]:
    """The value ids whose principles address a safety harm: the harm itself and its
    foundations (``HARM_FOUNDATIONS``)."""
    return frozenset((harm, *HARM_FOUNDATIONS.get(harm, ())))


VALUEEVAL_CATEGORIES: tuple[str, ...] = (  # the ValueEval columns, in the data's order
    "Self-direction: thought", "Self-direction: action", "Stimulation", "Hedonism",
    "Achievement", "Power: dominance", "Power: resources", "Face", "Security: personal",
    "Security: societal", "Tradition", "Conformity: rules", "Conformity: interpersonal",
    "Humility", "Benevolence: caring", "Benevolence: dependability", "Universalism: concern",
    "Universalism: nature", "Universalism: tolerance", "Universalism: objectivity",
)
