"""scripts/train.py's data-dependent recipe: epochs, learning rate, warm-up, evaluations and augmentation chosen by
the training set's size unless the command line gives them."""

import pytest
from transformers import TrainingArguments

import train
from vitx_common import augmentation


def test_the_digits_get_many_epochs_augmentation_and_twenty_evaluations():
    recipe = train.data_recipe(train_size=1437, eval_size=360, batch_size=32)  # 45 steps an epoch
    assert recipe == {"num_train_epochs": 34, "learning_rate": 2e-3, "warmup_steps": 77, "eval_steps": 0.05,
                      "augment": True}


def test_mnist_gets_two_epochs_without_augmentation_and_three_evaluations():
    recipe = train.data_recipe(train_size=60000, eval_size=10000, batch_size=32)  # 1,875 steps an epoch
    assert recipe == {"num_train_epochs": 2, "learning_rate": 5e-4, "warmup_steps": 188, "eval_steps": 1 / 3,
                      "augment": False}
    one_epoch = train.data_recipe(train_size=60000, eval_size=10000, batch_size=32, epochs=1)
    assert one_epoch["warmup_steps"] == 94 and one_epoch["eval_steps"] == 0.5  # a share: 1.0 would be every step


def test_a_small_labelled_share_trains_longer_within_the_cap():
    assert train.data_recipe(train_size=144, eval_size=360, batch_size=32)["num_train_epochs"] == train.MAX_EPOCHS
    assert train.data_recipe(train_size=20, eval_size=10, batch_size=32)["num_train_epochs"] == train.MAX_EPOCHS
    huge = train.data_recipe(train_size=1_281_167, eval_size=50_000, batch_size=256)
    assert huge["num_train_epochs"] == train.MIN_EPOCHS and huge["eval_steps"] == 1 / 15  # 50,000 eval images


@pytest.mark.parametrize("argv, given", [
    (["--learning_rate", "1e-3", "--num-train-epochs=5", "--seed", "1"], {"learning_rate", "num_train_epochs", "seed"}),
    ([], set()),
])
def test_given_flags(argv, given):
    assert train.given_flags(argv) == given


def test_the_command_line_wins_and_the_rest_follows_the_data(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-4, num_train_epochs=4,
                             per_device_train_batch_size=32, report_to=[], use_cpu=True)
    data_args = train.DataArguments(augment=None)
    recipe = train.apply_data_recipe(args, data_args, {"learning_rate", "num_train_epochs"}, 60000, 10000)
    assert (args.learning_rate, args.num_train_epochs) == (1e-4, 4)  # given: kept
    assert args.warmup_steps == recipe["warmup_steps"] == round(0.05 * 4 * 1875)  # from the run's real length
    assert args.eval_steps == recipe["eval_steps"] == 1 / 7  # 0.1 * 3 * 60000 * 4 / 10000 = 7.2 evaluations
    assert data_args.augment is False and augmentation(data_args) is None
    data_args = train.DataArguments(augment=True)
    train.apply_data_recipe(args, data_args, set(), 60000, 10000)
    assert data_args.augment is True and augmentation(data_args) == {
        "max_rotation": data_args.max_rotation, "max_shift": data_args.max_shift, "max_scale": data_args.max_scale}
    assert (args.learning_rate, args.num_train_epochs) == (5e-4, 2)


def test_max_steps_sets_the_length(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=100, per_device_train_batch_size=32, report_to=[],
                             use_cpu=True)
    train.apply_data_recipe(args, train.DataArguments(), set(), 1437, 360)
    assert args.warmup_steps == 5 and args.max_steps == 100  # 5% of the 100 steps the run takes
