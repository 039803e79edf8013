"Retrain the tiny-shapes captioner from scratch (about four minutes on two cores) and check it learned the task."
import json, time
from conftest import artifacts_dir


def test_retraining_meets_the_slot_targets():
    from qvl_nbsens.fixture import TrainRecipe, train_tiny_shapes, embedded_report
    t = time.time()
    state, rep = train_tiny_shapes(TrainRecipe(), verbose=False)
    rep['wall_seconds_in_test'] = round(time.time() - t, 1)
    (artifacts_dir()/'fixture-training-report.json').write_text(json.dumps(rep, indent=2))
    acc = rep['after']['slot_accuracy']
    assert acc['color'] >= 0.9 and acc['background'] >= 0.9, acc
    assert acc['shape'] >= 0.6, acc
    assert rep['after']['heldout_loss'] < rep['before']['heldout_loss'] / 10
    assert rep['recipe_hash'] == embedded_report()['recipe_hash']
