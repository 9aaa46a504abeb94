"""A two-layer network in the names of the method page.

Units are circles, each layer's bias a square feeding the next layer;
the forward pass runs left to right along the top, the deltas right to
left along the bottom. Drawn when the documentation is built.
"""

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle

# units per layer: n_features, one hidden layer, n_outputs
UNITS = [4, 5, 3]
X_POS = [0.0, 4.0, 8.0]
SPACING = 1.0
RADIUS = 0.28
COLORS = ["#9ecae1", "#a1d99b", "#fdae6b"]


def unit_y(n, i):
    """Vertical position of unit ``i`` of a layer of ``n`` units (centred)."""
    return (i - (n - 1) / 2) * SPACING


def arrow(ax, start, end, color, label=None, label_at=None, **kwargs):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16,
                                 lw=2, color=color, **kwargs))
    if label:
        ax.text(*label_at, label, ha="center", va="center", color=color, fontsize=11)


fig, ax = plt.subplots(figsize=(7.6, 5.6))

# weights: every unit of layer l to every unit of layer l + 1
for l in range(len(UNITS) - 1):
    for i in range(UNITS[l]):
        for j in range(UNITS[l + 1]):
            ax.plot([X_POS[l], X_POS[l + 1]], [unit_y(UNITS[l], i), unit_y(UNITS[l + 1], j)],
                    color="0.75", lw=0.8, zorder=1)
    ax.text((X_POS[l] + X_POS[l + 1]) / 2, 2.75, f"$W_{l}$", ha="center", fontsize=15)

# biases: one square per layer, added to every unit of the next layer
BIAS_Y = -3.35
for l in range(len(UNITS) - 1):
    bx = X_POS[l] + 1.1
    ax.add_patch(Rectangle((bx - 0.25, BIAS_Y - 0.25), 0.5, 0.5, fc="white", ec="0.3", zorder=3))
    ax.text(bx, BIAS_Y, "1", ha="center", va="center", fontsize=10, zorder=4)
    for j in range(UNITS[l + 1]):
        ax.plot([bx, X_POS[l + 1]], [BIAS_Y, unit_y(UNITS[l + 1], j)],
                color="0.6", lw=0.8, ls="--", zorder=1)
    ax.text(bx, BIAS_Y - 0.55, f"$b_{l}$", ha="center", va="top", fontsize=15)

# units
names = ["$A_0 = X$", "$A_1$", "$A_2 = P$"]
roles = ["input", r"hidden: $f$", r"output: $\mathrm{out}$"]
for l, n in enumerate(UNITS):
    for i in range(n):
        ax.add_patch(Circle((X_POS[l], unit_y(n, i)), RADIUS, fc=COLORS[l], ec="0.2",
                            lw=1.2, zorder=3))
    top = unit_y(n, n - 1) + RADIUS
    ax.text(X_POS[l], top + 0.25, names[l], ha="center", va="bottom", fontsize=15)
    ax.text(X_POS[l], -top - 0.2, roles[l], ha="center", va="top", fontsize=11, color="0.3")

# the loss, against the targets Y
ax.text(10.8, 0.0, "loss(P, Y)", ha="center", va="center", fontsize=13,
        bbox=dict(boxstyle="round,pad=0.4", fc="#fee0d2", ec="0.3"))
arrow(ax, (X_POS[2] + 0.4, 0.0), (9.75, 0.0), "0.3")

# forward pass, left to right, above the network
FWD = "#2171b5"
arrow(ax, (X_POS[0], 4.0), (X_POS[2], 4.0), FWD)
ax.text(4.0, 4.3, r"forward:  $A_{l+1} = f(A_l W_l + b_l)$,  $P = \mathrm{out}(A_1 W_1 + b_1)$",
        ha="center", va="bottom", color=FWD, fontsize=13)

# deltas, right to left, below the network
BWD = "#cb181d"
arrow(ax, (10.8, -0.45), (10.8, -4.6), BWD)
ax.text(10.95, -2.5, r"$\delta = \mathrm{sw} \odot (P - Y)$", ha="left", va="center",
        color=BWD, fontsize=13)
arrow(ax, (10.8, -4.6), (X_POS[1], -4.6), BWD)
ax.text(7.0, -5.0, r"$D_1 = f'(A_1) \odot (\delta\, W_1^{\mathsf{T}})$", ha="center",
        va="top", color=BWD, fontsize=13)
ax.text(5.3, -5.85, r"gradients:  $\mathrm{grad}\ W_l = A_l^{\mathsf{T}} \delta_{l+1}"
        r" / \mathrm{sw\_sum}$,  $\mathrm{grad}\ b_l = \sum_i (\delta_{l+1})_i / \mathrm{sw\_sum}$",
        ha="center", va="top", color=BWD, fontsize=12)

ax.set_xlim(-0.9, 14.0)
ax.set_ylim(-6.7, 5.0)
ax.set_aspect("equal")
ax.axis("off")
