"""Building blocks shared by components: layers, heads, gradient tools and distributed collectives."""
