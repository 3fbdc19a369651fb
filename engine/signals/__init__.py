"""Signal generators as SQL templates (:mod:`.generators`) and the checks of a strategy's signal columns (:mod:`.checks`)."""
