"""sb3-contrib's TRPO with its actor gradients taken in one backward pass instead of one per tensor.

``sb3_contrib.TRPO._compute_actor_grad`` calls ``torch.autograd.grad`` twice **per parameter tensor**
(the KL gradient with ``create_graph=True``, then the surrogate gradient). Each call walks the whole
backward graph, so a language model with ``P`` parameter tensors pays ``2P`` backward passes per
update, and every conjugate-gradient step then differentiates ``P`` separate KL-gradient graphs.
For the 2-layer test model (~25 actor tensors) that is most of TRPO's time; for SmolLM2 (~270 tensors)
it dominates everything.

:class:`LMTRPO` overrides that one method: both gradients come from a single ``autograd.grad`` call
over all actor tensors. The returned values are the same (``tests/agents/test_trpo.py`` compares
them with sb3-contrib's method to float tolerance); ``train``, the conjugate gradient, the line search
and the critic update are sb3-contrib's, unmodified. See ``docs/design.md`` (agents: TRPO).
"""

from __future__ import annotations

import torch
from sb3_contrib import TRPO
from torch import nn


class LMTRPO(TRPO):
    """``sb3_contrib.TRPO`` whose actor gradients cost one backward pass, not two per parameter tensor.

    Every constructor argument, attribute and saved file is sb3-contrib's ``TRPO``; an ``LMTRPO`` zip
    loads with ``TRPO.load`` and the other way round. Actor parameters are, as in sb3-contrib, the
    policy's parameters whose name lacks ``"value"`` and whose KL gradient exists; parameters with
    ``requires_grad=False`` (frozen layers, a LoRA base model) are skipped instead of raising.
    """

    def _compute_actor_grad(
        self, kl_div: torch.Tensor, policy_objective: torch.Tensor
    ) -> tuple[list[nn.Parameter], torch.Tensor, torch.Tensor, list[torch.Size]]:
        """Flat KL and surrogate gradients over the actor parameters (same contract as sb3-contrib's).

        Args:
            kl_div: mean KL between the new and old policy (scalar, with graph).
            policy_objective: surrogate objective (scalar, with graph).

        Returns:
            ``(actor_params, policy_objective_gradients, grad_kl, grad_shape)``: the parameters, the
            flat surrogate gradient ``(n,)``, the flat KL gradient ``(n,)`` (with graph, for the
            Hessian-vector products) and each parameter's shape.
        """
        candidates = [p for name, p in self.policy.named_parameters() if "value" not in name and p.requires_grad]
        kl_grads = torch.autograd.grad(kl_div, candidates, create_graph=True, retain_graph=True, allow_unused=True)
        actor_params = [p for p, g in zip(candidates, kl_grads, strict=True) if g is not None]
        grad_kl_list = [g for g in kl_grads if g is not None]
        objective_grads = torch.autograd.grad(policy_objective, actor_params, retain_graph=True)
        grad_shape = [g.shape for g in grad_kl_list]
        grad_kl = torch.cat([g.reshape(-1) for g in grad_kl_list])  # (n,)
        policy_objective_gradients = torch.cat([g.reshape(-1) for g in objective_grads])  # (n,)
        return actor_params, policy_objective_gradients, grad_kl, grad_shape
