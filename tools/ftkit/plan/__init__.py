"""`ftkit plan`: the decision framework (rules) and the recommender over the recipe catalog."""
