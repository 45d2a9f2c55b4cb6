"""The parameter names each model kind accepts, to refuse a misspelt one when mlprod.yaml loads.

The names are the model libraries' own (LightGBM's documented parameters with their aliases,
scikit-learn's ``get_params()``), written out here so that loading a config does not import
LightGBM or scikit-learn (each takes seconds to import). ``tests/test_nothing_silent.py``
compares these lists with the installed libraries, so an upgrade that adds or renames a
parameter fails a test instead of refusing a valid config.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# LightGBM 4.7.0: its parameters (the keys of lightgbm.basic._ConfigAliases), then their aliases.
LIGHTGBM_MAIN = _words(
    """
    alpha auc_mu_weights bagging_by_query bagging_fraction bagging_freq bagging_seed
    bin_construct_sample_cnt boost_from_average boosting cat_l2 cat_smooth categorical_feature
    cegb_penalty_feature_coupled cegb_penalty_feature_lazy cegb_penalty_split cegb_tradeoff
    config convert_model convert_model_language data data_random_seed data_sample_strategy
    deterministic device_type drop_rate drop_seed early_stopping_min_delta early_stopping_round
    enable_bundle eval_at extra_seed extra_trees fair_c feature_contri feature_fraction
    feature_fraction_bynode feature_fraction_seed feature_pre_filter first_metric_only
    force_col_wise force_row_wise forcedbins_filename forcedsplits_filename gpu_device_id
    gpu_device_id_list gpu_platform_id gpu_use_dp group_column header histogram_pool_size
    ignore_column input_model interaction_constraints is_enable_sparse
    is_provide_training_metric is_unbalance label_column label_gain lambda_l1 lambda_l2
    lambdarank_norm lambdarank_position_bias_regularization lambdarank_truncation_level
    learning_rate linear_lambda linear_tree local_listen_port machine_list_filename machines
    max_bin max_bin_by_feature max_cat_threshold max_cat_to_onehot max_delta_step max_depth
    max_drop metric metric_freq min_data_in_bin min_data_in_leaf min_data_per_group
    min_gain_to_split min_sum_hessian_in_leaf monotone_constraints monotone_constraints_method
    monotone_penalty multi_error_top_k neg_bagging_fraction num_class num_gpu
    num_grad_quant_bins num_iteration_predict num_iterations num_leaves num_machines num_threads
    objective objective_seed other_rate output_model output_result parser_config_file
    path_smooth poisson_max_delta_step pos_bagging_fraction pre_partition precise_float_parser
    pred_early_stop pred_early_stop_freq pred_early_stop_margin predict_contrib
    predict_disable_shape_check predict_leaf_index predict_raw_score quant_train_renew_leaf
    refit_decay_rate reg_sqrt save_binary saved_feature_importance_type scale_pos_weight seed
    sigmoid skip_drop snapshot_freq start_iteration_predict stochastic_rounding task time_out
    top_k top_rate tree_learner tweedie_variance_power two_round uniform_drop use_missing
    use_quantized_grad valid verbosity weight_column xgboost_dart_mode zero_as_missing
    """
)
LIGHTGBM = LIGHTGBM_MAIN | _words(
    """
    app application bagging bagging_fraction_seed blacklist boost boosting_type bundle
    cat_column cat_feature categorical_column categorical_features colsample_bynode
    colsample_bytree config_file contrib convert_model_file data_filename data_seed device
    early_stopping early_stopping_rounds enable_sparse eta extra_tree fc feature_contrib
    feature_penalty forced_splits forced_splits_file forced_splits_filename fp fs group group_id
    has_header hist_pool_size ignore_feature is_enable_bundle is_pre_partition
    is_predict_contrib is_predict_leaf_index is_predict_raw_score is_save_binary
    is_save_binary_file is_sparse is_training_metric l1_regularization l2_regularization label
    lambda leaf_index linear_trees local_port loss machine_list machine_list_file map_at
    map_eval_at max_bins max_iter max_leaf max_leaf_nodes max_leaf_output max_leaves
    max_tree_output mc mc_method mc_penalty metric_types metrics min_child_samples
    min_child_weight min_data min_data_per_leaf min_hessian min_samples_leaf min_split_gain
    min_sum_hessian min_sum_hessian_per_leaf mlist model_in model_input model_out model_output
    monotone_constraining_method monotone_constraint monotone_splits_penalty monotonic_cst
    ms_penalty n_estimators n_iter n_iter_no_change n_jobs name_pred ndcg_at ndcg_eval_at
    neg_bagging neg_sub_row neg_subsample nodes nrounds nthread nthreads num_boost_round
    num_classes num_iteration num_leaf num_machine num_round num_rounds num_thread num_tree
    num_trees objective_type output_freq port pos_bagging pos_sub_row pos_subsample pred_name
    predict_name predict_rawscore predict_result prediction_name prediction_result query
    query_column query_id random_seed random_state rate_drop raw_score reg_alpha reg_lambda
    save_period shrinkage_rate sparse sub_feature sub_feature_bynode sub_row subsample
    subsample_for_bin subsample_freq task_type test test_data test_data_file topk train
    train_data train_data_file train_metric training_metric tree tree_learner_type tree_type
    two_round_loading unbalance unbalanced_sets use_two_round_loading valid_data valid_data_file
    valid_filenames verbose weight workers
    """
)

# scikit-learn 1.9: LogisticRegression().get_params() but random_state and solver, which the
# trainer sets (the solver follows the penalty).
LOGISTIC = _words(
    """
    C class_weight dual fit_intercept intercept_scaling l1_ratio max_iter n_jobs penalty tol
    verbose warm_start
    """
)

# scikit-learn 1.9: RandomForestClassifier().get_params() but random_state (train.seed).
RANDOM_FOREST = _words(
    """
    bootstrap ccp_alpha class_weight criterion max_depth max_features max_leaf_nodes max_samples
    min_impurity_decrease min_samples_leaf min_samples_split min_weight_fraction_leaf
    monotonic_cst n_estimators n_jobs oob_score verbose warm_start
    """
)

# mlprod's own settings of the kinds it assembles from several scikit-learn parts.
SVM = frozenset({"C", "gamma", "components", "max_rows"})
MLP = frozenset({"hidden", "alpha", "epochs", "patience"})


PARAMETERS: dict[str, frozenset[str]] = {
    "lightgbm": LIGHTGBM,
    "logistic": LOGISTIC,
    "random_forest": RANDOM_FOREST,
    "svm": SVM,
    "mlp": MLP,
}
