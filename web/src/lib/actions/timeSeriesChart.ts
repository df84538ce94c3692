/**
 * Draws a time series with uPlot on the element it is used on, redraws it when the series
 * changes, follows the element's width, and removes the chart with the element. uPlot draws on
 * a canvas, which screen readers cannot read: every chart has its data table beside it
 * (`TimeSeriesChart.svelte`), and the canvas is hidden from assistive technology.
 */
import type { Action } from 'svelte/action';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { ChartSeries } from '$lib/api';
import { plotColumns } from '$lib/series';

/** Line colours that keep their contrast on the light and the dark theme. */
const COLOURS = ['#2563eb', '#d97706', '#059669', '#dc2626', '#7c3aed', '#0891b2', '#be185d'];
const HEIGHT_PX = 260;

function options(series: ChartSeries, width: number): uPlot.Options {
	const month = series.bucket === 'month';
	return {
		width,
		height: HEIGHT_PX,
		// Dates are UTC, as the API's buckets are.
		tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), 'Etc/UTC'),
		scales: { x: { time: true } },
		axes: [
			month ? { values: '{MMM} {YYYY}', stroke: 'currentColor' } : { stroke: 'currentColor' },
			{ stroke: 'currentColor', size: 60 }
		],
		legend: { show: series.series.length > 1 },
		series: [
			{ label: month ? 'Month' : series.bucket === 'minute' ? 'Time' : 'Day' },
			...series.series.map((line, index) => ({
				label: line.label,
				stroke: COLOURS[index % COLOURS.length],
				width: 2,
				points: { show: true, size: 5 }
			}))
		]
	};
}

export const timeSeriesChart: Action<HTMLElement, ChartSeries> = (node, initial) => {
	let series = initial;
	let plot: uPlot | undefined;
	const width = () => Math.max(node.clientWidth, 240);
	const draw = () => {
		plot?.destroy();
		plot = new uPlot(options(series, width()), plotColumns(series) as uPlot.AlignedData, node);
		node.querySelector('canvas')?.setAttribute('aria-hidden', 'true');
	};
	draw();
	const resized = new ResizeObserver(() => plot?.setSize({ width: width(), height: HEIGHT_PX }));
	resized.observe(node);
	return {
		update(next: ChartSeries) {
			series = next;
			draw();
		},
		destroy() {
			resized.disconnect();
			plot?.destroy();
		}
	};
};
