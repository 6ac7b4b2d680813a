"""`make demo`: synthetic data -> train the small PointPillars -> evaluate
-> quantize to int8 for the DPU (PTQ, then PTQ + fast finetune) -> export
the PTQ model's deploy folder, check it and evaluate the deployed pipeline
(numpy glue + onnxruntime) -> [--qat: quantization-aware training and its
deploy folder] -> compare -> the model-zoo row (results/<config>.json,
README table, metafile) and its three pictures.

Each stage runs the same command a user would (printed before it runs) and
is skipped when its output already exists, so an interrupted demo resumes.
Results go to WORK_DIR/report.json, which later stages extend.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from mmdet3d_vitis.config_utils import data_root_options  # noqa: E402
from mmdet3d_vitis.report import format_summary, update_report  # noqa: E402

SMALL_CONFIG = ('configs/pointpillars/'
                'pointpillars_small_secfpn_synthetic-nus-3d.py')
QAT_CONFIG = ('configs/pointpillars/'
              'pointpillars_small_secfpn_synthetic-nus-3d_qat.py')


def run(cmd):
    print('+ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def stage_data(args):
    infos = osp.join(args.data_root, 'nuscenes_infos_val.pkl')
    if osp.isfile(infos):
        print(f'[data] {args.data_root} exists, skipping generation')
        return None
    start = time.time()
    run([sys.executable, 'tools/create_synthetic_nuscenes.py', '--out',
         args.data_root, '--scenes', '10', '--seed', str(args.seed)])
    return dict(seconds=round(time.time() - start, 1))


def stage_train(args, cfg_options):
    work = osp.join(args.work_dir, 'float')
    ckpt = osp.join(work, f'epoch_{args.epochs}.pth')
    if osp.isfile(ckpt):
        print(f'[train] {ckpt} exists, skipping training')
        return ckpt, None
    start = time.time()
    run([sys.executable, 'tools/train.py', SMALL_CONFIG, '--work-dir', work,
         '--cfg-options'] + cfg_options + [
             f'train_cfg.max_epochs={args.epochs}',
             f'train_cfg.val_interval={args.epochs}',
             f'default_hooks.checkpoint.interval={args.epochs}',
             f'randomness.seed={args.seed}'])
    return ckpt, dict(seconds=round(time.time() - start, 1),
                      epochs=args.epochs)


def stage_test(args, ckpt, cfg_options):
    out = osp.join(args.work_dir, 'float', 'metrics.json')
    run([sys.executable, 'tools/test.py', SMALL_CONFIG, ckpt, '--work-dir',
         osp.join(args.work_dir, 'float'), '--out-json', out,
         '--cfg-options'] + cfg_options)
    with open(out) as f:
        return json.load(f)['summary']


def stage_quant(args, ckpt, cfg_options, name, extra, deploy=False):
    """calib then test with tools/quant.py (``deploy``: test with
    --dump_xmodel, which writes QUANT_DIR/deploy and its deploy check);
    returns its float/int8 summary."""
    quant_dir = osp.join(args.work_dir, name)
    common = [sys.executable, 'tools/quant.py', SMALL_CONFIG, ckpt,
              '--quant_dir', quant_dir, '--work-dir', quant_dir]
    if not osp.isfile(osp.join(REPO, quant_dir, 'calib.json')):
        run(common + ['--quant_mode', 'calib', '--calib_len',
                      str(args.calib_len), '--calib_sample_method', 'random',
                      '--seed', str(args.seed)] + extra +
            ['--cfg-options'] + cfg_options)
    run(common + ['--quant_mode', 'test'] +
        (['--dump_xmodel'] if deploy else []) + ['--cfg-options'] +
        cfg_options)
    with open(osp.join(REPO, quant_dir, 'report.json')) as f:
        report = json.load(f)
    with open(osp.join(REPO, quant_dir, 'calib.json')) as f:
        calib = json.load(f)
    return dict(int8=report['int8'], delta=report['delta'],
                backend=report['backend'], quant_dir=quant_dir,
                calib_frames=calib['calib_len'],
                fast_finetune=report['fast_finetune'],
                calib_seconds=calib['seconds'],
                deploy_dir=report.get('deploy_dir'),
                deploy_check=report.get('deploy_check'))


def stage_deploy_test(args, deploy_dir, cfg_options):
    """The deployed pipeline (numpy glue + onnxruntime) on the same val
    set, with the config's evaluator: tools/deploy_test.py."""
    out = osp.join(args.work_dir, 'int8_deployed', 'metrics.json')
    run([sys.executable, 'tools/deploy_test.py', deploy_dir, SMALL_CONFIG,
         '--work-dir', osp.join(args.work_dir, 'int8_deployed'),
         '--out-json', out, '--cfg-options'] + cfg_options)
    with open(osp.join(REPO, out)) as f:
        result = json.load(f)
    return dict(result, deploy_dir=deploy_dir)


def stage_qat(args, ckpt, cfg_options):
    """Quantization-aware training from the float checkpoint (the QAT
    config: DPUQATHook, 3 epochs), then tools/quant.py --quant_mode test
    --dump_xmodel on its checkpoint (no recalibration)."""
    quant_dir = osp.join(args.work_dir, 'int8_qat')
    train_dir = osp.join(quant_dir, 'train')
    qat_ckpt = osp.join(train_dir, 'epoch_3.pth')
    start = time.time()
    if not osp.isfile(osp.join(REPO, qat_ckpt)):
        run([sys.executable, 'tools/train.py', QAT_CONFIG, '--work-dir',
             train_dir, '--cfg-options', f'load_from={ckpt}'] + cfg_options)
    train_seconds = round(time.time() - start, 1)
    run([sys.executable, 'tools/quant.py', QAT_CONFIG, qat_ckpt,
         '--quant_mode', 'test', '--dump_xmodel', '--quant_dir', quant_dir,
         '--work-dir', quant_dir, '--cfg-options'] + cfg_options)
    with open(osp.join(REPO, quant_dir, 'report.json')) as f:
        report = json.load(f)
    return dict(int8=report['int8'], delta=report['delta'],
                backend=report['backend'], quant_dir=quant_dir,
                checkpoint=qat_ckpt, train_seconds=train_seconds,
                deploy_check=report.get('deploy_check'))


def stage_zoo(args, ckpt, cfg_options, quant_dirs, deploy_dir):
    """The small model's model-zoo row (results/<config>.json, accuracy
    from the quant reports, GOPs, latency on the real nuScenes frame), the
    three pictures in WORK_DIR, then the README table and metafile."""
    name = osp.splitext(osp.basename(SMALL_CONFIG))[0]
    row = osp.join('results', f'{name}.json')
    quant = []
    for q in quant_dirs:
        quant += ['--quant_dir', q]
    run([sys.executable, 'tools/benchmark.py', SMALL_CONFIG, ckpt, '--row',
         '--plots'] + quant + [
             '--deploy_dir', deploy_dir, '--plot_dir', args.work_dir,
             '--scaling_repeats', '3', '--out', row, '--cfg-options'] +
        cfg_options)
    rows = sorted(glob.glob(osp.join(REPO, 'results', '*.json')))
    run([sys.executable, 'tools/zoo_table.py'] +
        [osp.relpath(r, REPO) for r in rows])
    pictures = [osp.join(args.work_dir, f) for f in (
        'bev_gt_float_int8.png', 'sqnr_per_layer.png',
        'latency_vs_points.png')]
    return dict(row=row, pictures=pictures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic')
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--calib-len', type=int, default=100)
    parser.add_argument('--fft-len', type=int, default=50)
    parser.add_argument(
        '--qat', action='store_true',
        help='also run quantization-aware training (about 10 more minutes '
        'on 2 cores) and add its row (make demo QAT=1)')
    args = parser.parse_args()
    os.makedirs(osp.join(REPO, args.work_dir), exist_ok=True)
    report = osp.join(REPO, args.work_dir, 'report.json')
    root = args.data_root.rstrip('/') + '/'
    cfg_options = data_root_options(root)

    data = stage_data(args)
    if data:
        update_report(report, 'data', dict(root=root, **data))
    ckpt, train = stage_train(args, cfg_options)
    if train:
        update_report(report, 'train', dict(config=SMALL_CONFIG,
                                            checkpoint=ckpt, **train))
    float_summary = stage_test(args, ckpt, cfg_options)
    update_report(report, 'float', float_summary)
    print(format_summary(float_summary, '== float (PyTorch) on synthetic '
                         'mini_val'))

    rows = {'float': float_summary}
    report_dirs, deploy_dir = {}, None
    for name, extra in (('int8_ptq', []),
                        ('int8_fast_finetune',
                         ['--fast_finetune', '--fft_len', str(args.fft_len)])):
        result = stage_quant(args, ckpt, cfg_options, name, extra,
                             deploy=name == 'int8_ptq')
        update_report(report, name, result)
        rows[name] = result['int8']
        report_dirs[name] = result['quant_dir']
        if name == 'int8_ptq':
            # relative, as the zoo row records its commands
            deploy_dir = osp.join(result['quant_dir'], 'deploy')
            deployed = stage_deploy_test(args, deploy_dir, cfg_options)
            update_report(report, 'int8_deployed', deployed)
            rows['int8_ptq_deployed (ORT)'] = deployed['summary']
    if args.qat:
        qat = stage_qat(args, ckpt, cfg_options)
        update_report(report, 'int8_qat', qat)
        rows['int8_qat'] = qat['int8']
        report_dirs['int8_qat'] = qat['quant_dir']
    zoo = stage_zoo(args, ckpt, cfg_options,
                    [report_dirs[n] for n in ('int8_ptq', 'int8_fast_finetune',
                                              'int8_qat')
                     if n in report_dirs], deploy_dir)
    update_report(report, 'zoo', zoo)
    print('\n== float vs int8 on synthetic mini_val')
    print(f'{"model":<26s} {"mAP":>8s} {"NDS":>8s} {"car AP":>8s}')
    for name, summary in rows.items():
        print(f'{name:<26s} {summary["mAP"]:8.4f} {summary["NDS"]:8.4f} '
              f'{summary["per_class_AP"].get("car", float("nan")):8.4f}')
    print(f'report: {report}')


if __name__ == '__main__':
    main()
