"""Evaluation: the offline protocols, the interactive simulator, peers and the report.

What a researcher needs to bring a recommender of their own (``fyp eval ... --peer``)
is exported here; the rest is internal.
"""

from fyp.evaluation.baselines import Recommender
from fyp.evaluation.contract import ContractReport, check_recommender

__all__ = ["ContractReport", "Recommender", "check_recommender"]
