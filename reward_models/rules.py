"""Rule rewards: scores computed from the text by a fixed rule, no training.

``sentiment`` is the offline stand-in for human preference used throughout the project, after
Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences", whose "mock
sentiment" task trains a policy to continue movie reviews positively. ``pattern_sentiment`` is a
second, independent sentiment lexicon: the held-out judge that nothing trains on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from reward_models.base import RewardFunction, check_scores, make_reward, register_reward


class SentimentReward:
    """VADER compound sentiment of the response, in [-1, 1] (Hutto & Gilbert 2014, MIT lexicon).

    Args:
        include_prompt: score ``prompt + response`` instead of the response alone.
    """

    def __init__(self, include_prompt: bool = False):
        self.include_prompt = include_prompt
        self._analyzer = None  # built lazily: keeps the object cheap to pickle into subprocesses

    def _get(self):
        if self._analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._analyzer = SentimentIntensityAnalyzer()
        return self._analyzer

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        analyzer = self._get()
        texts = [p + r if self.include_prompt else r for p, r in zip(prompts, responses)]
        return check_scores([analyzer.polarity_scores(t)["compound"] for t in texts], prompts, "sentiment")

    def __getstate__(self):
        return {"include_prompt": self.include_prompt, "_analyzer": None}

    def __repr__(self) -> str:
        return f"SentimentReward(include_prompt={self.include_prompt})"


class PatternSentimentReward:
    """TextBlob's pattern-lexicon polarity of the response, in [-1, 1] (De Smedt & Daelemans 2012).

    The project's second judge: held out from every stage (nothing trains on it), so a gain that exists only
    under VADER shows up as a gap between the two. Why this lexicon (docs/reward-models.md, "The second judge"):
    it was built independently of VADER's (hand-rated adjectives from product reviews, where VADER rated
    words from LIWC, ANEW and General Inquirer plus slang), and it averages the polarity of the sentiment
    words found where VADER sums them, with no boost for capitals: repeating or capitalising a word gains
    nothing. Both boost exclamation marks and intensifiers ("very"), so that exploit is shared.
    The lexicon ships inside the ``textblob`` wheel; no NLTK corpus is needed for this scorer.

    Args:
        include_prompt: score ``prompt + response`` instead of the response alone.
    """

    def __init__(self, include_prompt: bool = False):
        import importlib.util

        if importlib.util.find_spec("textblob") is None:  # at construction: before a pipeline trains anything
            raise ImportError(
                "the pattern_sentiment judge needs textblob, a dependency of textrlhf: reinstall the project "
                "(pip install -e .) or pip install 'textblob>=0.19'"
            )
        self.include_prompt = include_prompt
        self._analyzer = None  # built lazily: importing textblob (and NLTK) takes seconds

    def _get(self):
        if self._analyzer is None:
            from textblob.en.sentiments import PatternAnalyzer

            self._analyzer = PatternAnalyzer()
        return self._analyzer

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Polarity of each response (or ``prompt + response``), float32 in [-1, 1]."""
        analyzer = self._get()
        texts = [p + r if self.include_prompt else r for p, r in zip(prompts, responses)]
        return check_scores([analyzer.analyze(t).polarity for t in texts], prompts, "pattern_sentiment")

    def __getstate__(self):
        return {"include_prompt": self.include_prompt, "_analyzer": None}

    def __repr__(self) -> str:
        return f"PatternSentimentReward(include_prompt={self.include_prompt})"


class LengthReward:
    """Minus the relative distance of the response's word count to a target: ``-|n - target| / target``.

    The best score is 0, at exactly ``target`` words.
    """

    def __init__(self, target: int = 12):
        if not isinstance(target, int) or isinstance(target, bool) or target <= 0:
            raise ValueError(f"length target must be a positive int, got {target!r}")
        self.target = target

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        n = np.array([len(r.split()) for r in responses], dtype=np.float32)
        return check_scores(-np.abs(n - self.target) / self.target, prompts, "length")

    def __repr__(self) -> str:
        return f"LengthReward(target={self.target})"


class KeywordReward:
    """Fraction of the given keywords that occur in the response (case-insensitive by default).

    Args:
        keywords: words or phrases to reward.
        case_sensitive: match case exactly.
    """

    def __init__(self, keywords: Sequence[str] = ("good", "great", "love"), case_sensitive: bool = False):
        if isinstance(keywords, str) or not keywords or not all(isinstance(k, str) and k for k in keywords):
            raise ValueError(f"keywords must be a non-empty list of non-empty strings, got {keywords!r}")
        self.keywords = list(keywords)
        self.case_sensitive = case_sensitive

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        keys = self.keywords if self.case_sensitive else [k.lower() for k in self.keywords]
        texts = responses if self.case_sensitive else [r.lower() for r in responses]
        return check_scores([sum(k in t for k in keys) / len(keys) for t in texts], prompts, "keywords")

    def __repr__(self) -> str:
        return f"KeywordReward({self.keywords!r})"


class WeightedSumReward:
    """``sum_i w_i * reward_i``; each part is any reward spec accepted by :func:`make_reward`.

    Args:
        rewards: mapping ``spec -> weight`` (e.g. ``{"sentiment": 1.0, "length": 0.1}``) or a list of
            ``(reward, weight)`` pairs.
    """

    def __init__(self, rewards: Mapping | Sequence):
        items = list(rewards.items()) if isinstance(rewards, Mapping) else list(rewards)
        if not items:
            raise ValueError("weighted_sum needs at least one (reward, weight) pair")
        self.parts: list[tuple[RewardFunction, float]] = []
        for spec, weight in items:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight):
                raise ValueError(f"weight of reward {spec!r} must be a finite number, got {weight!r}")
            self.parts.append((make_reward(spec), float(weight)))

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        total = np.zeros(len(prompts), dtype=np.float64)
        for reward, weight in self.parts:
            total += weight * check_scores(reward.score(prompts, responses), prompts, repr(reward))
        return check_scores(total, prompts, "weighted_sum")

    def __repr__(self) -> str:
        return f"WeightedSumReward({self.parts!r})"


register_reward("sentiment", SentimentReward)
register_reward("pattern_sentiment", PatternSentimentReward)
register_reward("length", LengthReward)
register_reward("keywords", KeywordReward)
register_reward("weighted_sum", WeightedSumReward)
