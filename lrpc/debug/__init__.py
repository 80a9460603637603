"""Seeing inside a compiled explainer: the paired graph, its dumps, and where relevance leaks.

    explainer.graph                      # networkx.DiGraph, one node per forward node
    explainer.dump("resnet.svg", exp)    # .dot .svg .png .json .graphml .txt
    exp.leaks(1e-6)                      # nodes that create or lose relevance, largest first
"""
from .accounting import Leak, NodeFlow, absorber, leaks, node_flows
from .formats import FORMATS, serialize, write
from .graph import build_graph

__all__ = ["FORMATS", "Leak", "NodeFlow", "absorber", "build_graph", "leaks", "node_flows", "serialize", "write"]
