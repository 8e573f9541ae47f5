"""Entity resolution: match rules, clustering and stable entity ids."""
