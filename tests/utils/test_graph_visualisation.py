"""Model drawings: node kinds, PNG/SVG by Graphviz, the interactive page in headless Chromium."""
import html
import json
import re
import shutil

import pytest

from elektronn2.errors import ConfigError
from elektronn2.utils.graph_visualisation import KIND_STYLES, node_kind, visualise_model
from elektronn2.utils.optional import MissingDependencyError

needs_dot = pytest.mark.skipif(shutil.which('dot') is None,
                               reason="Graphviz 'dot' not found (apt-get install graphviz)")
CHROMIUM = next(filter(None, map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome'))),
                None)
#: Flags that keep headless Chromium off the network.
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync']

EXPECTED_KINDS = {'raw': 'input', 'conv': 'layer', 'conv1': 'layer', 'concat': 'merge',
                  'pool': 'pool', 'conv2': 'layer', 'dot': 'layer', 'softmax': 'output',
                  'target': 'input', 'nll': 'loss', 'loss': 'loss', 'errors': 'loss'}


def test_node_kinds(small_model):
    kinds = {name: node_kind(node) for name, node in small_model.nodes.items()}
    assert kinds == {name: EXPECTED_KINDS[name] for name in kinds}
    assert set(kinds.values()) <= set(KIND_STYLES)


@needs_dot
def test_png_svg_and_html_are_written(small_model, tmp_path):
    files = visualise_model(small_model, tmp_path / 'drawings' / 'net.png')
    assert sorted(files) == ['html', 'png', 'svg']
    assert files['png'] == tmp_path / 'drawings' / 'net.png'
    assert files['png'].read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    from PIL import Image
    width, height = Image.open(files['png']).size
    assert width > 300 and height > 600
    svg = html.unescape(files['svg'].read_text())
    for i, (name, node) in enumerate(small_model.nodes.items()):
        assert f'id="node{i}"' in svg and f'>{name}</text>' in svg
        assert KIND_STYLES[node_kind(node)]['fillcolor'] in svg
        sh = node.shape
        sizes = ', '.join('-' if n is None else str(n) for n in sh.shape)
        assert f">({sizes}) {','.join(sh.tags)}</text>" in svg
        if sh.spatial_axes:
            assert f">fov {'x'.join(map(str, sh.fov))}, strides {'x'.join(map(str, sh.strides))}<" in svg
    assert '>(-, 8, 7, 7) b,f,x,y</text>' in svg and '>fov 6x6, strides 2x2<' in svg   # pool
    page = files['html'].read_text()
    assert '<svg' in page and 'node11' in page
    assert not re.search(r'<(script|link|img)[^>]+(src|href)=', page), 'nothing loaded from outside'
    data = json.loads(re.search(r'id="model-data">(.*?)</script>', page, re.S).group(1))
    conv = data['node1']
    assert conv['class'] == 'Conv' and conv['cost'] == small_model['conv'].computational_cost
    assert conv['descriptor']['args']['parent'] == 'raw'
    assert [p['name'] for p in conv['params']] == ['w', 'b']


@needs_dot
def test_only_chosen_formats(small_model, tmp_path):
    assert list(visualise_model(small_model, tmp_path / 'net', formats=['svg'])) == ['svg']
    assert not (tmp_path / 'net.png').exists()
    with pytest.raises(ConfigError, match=r"unknown formats \['pdf'\]"):
        visualise_model(small_model, tmp_path / 'net', formats=['pdf'])


def test_missing_dot_names_the_apt_package(small_model, tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))
    with pytest.raises(MissingDependencyError, match='apt-get install graphviz'):
        visualise_model(small_model, tmp_path / 'net')


@needs_dot
@pytest.mark.skipif(CHROMIUM is None, reason='Chromium not found (apt-get install chromium)')
def test_page_in_headless_chromium_renders_nodes_zooms_pans_and_shows_details(small_model,
                                                                              tmp_path):
    sync_api = pytest.importorskip('playwright.sync_api',
                                   reason='playwright not installed (pip install playwright)')
    page_file = visualise_model(small_model, tmp_path / 'net', formats=['html'])['html']
    errors = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 900})
            page.on('pageerror', lambda err: errors.append(str(err)))
            page.goto(page_file.as_uri())
            nodes = page.locator('g.node')
            assert nodes.count() == len(small_model.nodes)
            for i in range(nodes.count()):
                box = nodes.nth(i).bounding_box()
                assert box and box['width'] > 20 and box['height'] > 10

            page.click('#node1')                                   # the 'conv' node
            details = page.inner_text('#details')
            assert 'conv' in page.inner_text('#details h2')
            facts = page.inner_text('#facts')
            assert 'Conv' in facts and 'layer' in facts and 'fov' in facts
            assert repr(small_model['conv'].shape) in facts
            params = page.inner_text('#params')
            assert '(4, 1, 3, 3)' in params and '36' in params
            assert 'filter_shape' in page.inner_text('#descriptor')
            assert page.locator('#node1.selected').count() == 1
            page.screenshot(path=str(tmp_path / 'clicked_conv.png'))

            page.click('#details a.node-link >> text=conv1')      # follow a child link
            assert page.inner_text('#details h2') == 'conv1'

            view_box = page.get_attribute('#canvas svg', 'viewBox')
            page.mouse.move(500, 400)
            page.mouse.wheel(0, -400)
            page.wait_for_function(f"document.querySelector('#canvas svg')"
                                   f".getAttribute('viewBox') !== '{view_box}'")
            zoomed = [float(v) for v in page.get_attribute('#canvas svg', 'viewBox').split()]
            assert zoomed[2] < float(view_box.split()[2]), 'wheel up zooms in'
            page.mouse.move(600, 500)
            page.mouse.down()
            page.mouse.move(700, 550, steps=5)
            page.mouse.up()
            panned = [float(v) for v in page.get_attribute('#canvas svg', 'viewBox').split()]
            assert panned[0] < zoomed[0] and panned[1] < zoomed[1], 'dragging pans'
            assert page.inner_text('#details h2') == 'conv1', 'a drag is no click'
            page.click('#zoom-fit')
            fitted = [float(v) for v in page.get_attribute('#canvas svg', 'viewBox').split()]
            assert fitted == pytest.approx([float(v) for v in view_box.split()])
            page.screenshot(path=str(tmp_path / 'screenshot.png'))
        finally:
            browser.close()
    assert not errors
    assert (tmp_path / 'screenshot.png').stat().st_size > 10_000
    assert details
