"""Market data for the local Polygon server: generated, or loaded from CSV files.

``MarketData`` keeps bars *as traded* and the split events separately, the way
Polygon does, so the server can answer both ``adjusted=false`` and
``adjusted=true`` from one copy. Bars are held per ticker as sorted numpy
arrays (a range query is two binary searches) plus a lazily built index by
date (a grouped-day query is two binary searches too).

Writers build new arrays and swap them in under a lock and never change an
array in place, so the server's threads read without locking.
"""

from __future__ import annotations

import datetime as dt
import threading
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Optional, Union

import numpy as np
import pandas as pd

from CandleThrob.bars import BAR_COLUMNS, empty_bars
from CandleThrob.planning.trading_calendar import DateLike, TradingCalendar
from CandleThrob.universe.tickers import ETF_TICKERS

# Column order of ``TickerBars.values``.
VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "transactions")
OPEN, HIGH, LOW, CLOSE, VOLUME, VWAP, TRANSACTIONS = range(len(VALUE_COLUMNS))
# what a split divides (volume it multiplies)
_PRICE_LIKE = [OPEN, HIGH, LOW, CLOSE, VWAP]

SECTORS = {
    "CD": "Consumer Discretionary", "CM": "Communication Services", "CS": "Consumer Staples",
    "EN": "Energy", "FI": "Financials", "HC": "Health Care", "IN": "Industrials",
    "IT": "Information Technology", "MA": "Materials", "RE": "Real Estate", "UT": "Utilities",
}
# The S&P 500 as listed on Wikipedia (datasets/s-and-p-500-companies, 2026), in the
# page's order: "symbol|security|sector code;". Embedded so that generated
# data needs no files.
_SP500 = """
MMM|3M|IN;AOS|A. O. Smith|IN;ABT|Abbott Laboratories|HC;ABBV|AbbVie|HC;ACN|Accenture|IT;
ADBE|Adobe Inc.|IT;AMD|Advanced Micro Devices|IT;AES|AES Corporation|UT;AFL|Aflac|FI;
A|Agilent Technologies|HC;APD|Air Products|MA;ABNB|Airbnb|CD;AKAM|Akamai Technologies|IT;
ALB|Albemarle Corporation|MA;ARE|Alexandria Real Estate Equities|RE;ALGN|Align Technology|HC;
ALLE|Allegion|IN;LNT|Alliant Energy|UT;ALL|Allstate|FI;GOOGL|Alphabet Inc. (Class A)|CM;
GOOG|Alphabet Inc. (Class C)|CM;MO|Altria|CS;AMZN|Amazon|CD;AMCR|Amcor|MA;AEE|Ameren|UT;
AEP|American Electric Power|UT;AXP|American Express|FI;AIG|American International Group|FI;
AMT|American Tower|RE;AWK|American Water Works|UT;AMP|Ameriprise Financial|FI;AME|Ametek|IN;
AMGN|Amgen|HC;APH|Amphenol|IT;ADI|Analog Devices|IT;AON|Aon plc|FI;APA|APA Corporation|EN;
APO|Apollo Global Management|FI;AAPL|Apple Inc.|IT;AMAT|Applied Materials|IT;APP|AppLovin|CM;
APTV|Aptiv|CD;ACGL|Arch Capital Group|FI;ADM|Archer Daniels Midland|CS;
ARES|Ares Management|FI;ANET|Arista Networks|IT;AJG|Arthur J. Gallagher & Co.|FI;
AIZ|Assurant|FI;T|AT&T|CM;ATO|Atmos Energy|UT;ADSK|Autodesk|IT;
ADP|Automatic Data Processing|IN;AZO|AutoZone|CD;AVB|AvalonBay Communities|RE;
AVY|Avery Dennison|MA;AXON|Axon Enterprise|IN;BKR|Baker Hughes|EN;BALL|Ball Corporation|MA;
BAC|Bank of America|FI;BAX|Baxter International|HC;BDX|Becton Dickinson|HC;
BRK.B|Berkshire Hathaway|FI;BBY|Best Buy|CD;TECH|Bio-Techne|HC;BIIB|Biogen|HC;
BLK|BlackRock|FI;BX|Blackstone Inc.|FI;XYZ|Block, Inc.|FI;BNY|BNY Mellon|FI;BA|Boeing|IN;
BKNG|Booking Holdings|CD;BSX|Boston Scientific|HC;BMY|Bristol Myers Squibb|HC;
AVGO|Broadcom|IT;BR|Broadridge Financial Solutions|IN;BRO|Brown & Brown|FI;
BF.B|Brown–Forman|CS;BLDR|Builders FirstSource|IN;BG|Bunge Global|CS;BXP|BXP, Inc.|RE;
CHRW|C.H. Robinson|IN;CDNS|Cadence Design Systems|IT;CPT|Camden Property Trust|RE;
COF|Capital One|FI;CAH|Cardinal Health|HC;CCL|Carnival Corporation|CD;CARR|Carrier Global|IN;
CVNA|Carvana|CD;CASY|Casey's|CS;CAT|Caterpillar Inc.|IN;CBOE|Cboe Global Markets|FI;
CBRE|CBRE Group|RE;CDW|CDW Corporation|IT;COR|Cencora|HC;CNC|Centene Corporation|HC;
CNP|CenterPoint Energy|UT;CF|CF Industries|MA;CRL|Charles River Laboratories|HC;
SCHW|Charles Schwab Corporation|FI;CHTR|Charter Communications|CM;CVX|Chevron Corporation|EN;
CMG|Chipotle Mexican Grill|CD;CB|Chubb Limited|FI;CHD|Church & Dwight|CS;CIEN|Ciena|IT;
CI|Cigna|HC;CINF|Cincinnati Financial|FI;CTAS|Cintas|IN;CSCO|Cisco|IT;C|Citigroup|FI;
CFG|Citizens Financial Group|FI;CLX|Clorox|CS;CME|CME Group|FI;CMS|CMS Energy|UT;
KO|Coca-Cola Company (The)|CS;CTSH|Cognizant|IT;COHR|Coherent Corp.|IT;COIN|Coinbase|FI;
CL|Colgate-Palmolive|CS;CMCSA|Comcast|CM;FIX|Comfort Systems USA|IN;COP|ConocoPhillips|EN;
ED|Consolidated Edison|UT;STZ|Constellation Brands|CS;CEG|Constellation Energy|UT;
COO|Cooper Companies (The)|HC;CPRT|Copart|IN;GLW|Corning Inc.|IT;CPAY|Corpay|FI;
CTVA|Corteva|MA;CSGP|CoStar Group|RE;COST|Costco|CS;CRH|CRH plc|MA;CRWD|CrowdStrike|IT;
CCI|Crown Castle|RE;CSX|CSX Corporation|IN;CMI|Cummins|IN;CVS|CVS Health|HC;
DHR|Danaher Corporation|HC;DRI|Darden Restaurants|CD;DDOG|Datadog|IT;DVA|DaVita|HC;
DECK|Deckers Brands|CD;DE|Deere & Company|IN;DELL|Dell Technologies|IT;DAL|Delta Air Lines|IN;
DVN|Devon Energy|EN;DXCM|Dexcom|HC;FANG|Diamondback Energy|EN;DLR|Digital Realty|RE;
DG|Dollar General|CS;DLTR|Dollar Tree|CS;D|Dominion Energy|UT;DPZ|Domino's|CD;
DASH|DoorDash|CD;DOV|Dover Corporation|IN;DOW|Dow Inc.|MA;DHI|D. R. Horton|CD;
DTE|DTE Energy|UT;DUK|Duke Energy|UT;DD|DuPont|IN;ETN|Eaton Corporation|IN;EBAY|eBay Inc.|CD;
ECHO|EchoStar|CM;ECL|Ecolab|MA;EIX|Edison International|UT;EW|Edwards Lifesciences|HC;
ELV|Elevance Health|HC;EME|Emcor|IN;EMR|Emerson Electric|IN;ETR|Entergy|UT;
EOG|EOG Resources|EN;EQT|EQT Corporation|EN;EFX|Equifax|IN;EQIX|Equinix|RE;
EQR|Equity Residential|RE;ERIE|Erie Indemnity|FI;ESS|Essex Property Trust|RE;
EL|Estée Lauder Companies (The)|CS;EG|Everest Group|FI;EVRG|Evergy|UT;ES|Eversource Energy|UT;
EXC|Exelon|UT;EXE|Expand Energy|EN;EXPE|Expedia Group|CD;EXPD|Expeditors International|IN;
EXR|Extra Space Storage|RE;XOM|ExxonMobil|EN;FFIV|F5, Inc.|IT;FDS|FactSet|FI;
FICO|Fair Isaac|IT;FAST|Fastenal|IN;FRT|Federal Realty Investment Trust|RE;FDX|FedEx|IN;
FDXF|FedEx Freight|IN;FERG|Ferguson Enterprises|IN;
FIS|Fidelity National Information Services|FI;FITB|Fifth Third Bancorp|FI;FSLR|First Solar|IT;
FE|FirstEnergy|UT;FISV|Fiserv|FI;FLEX|Flex Ltd.|IT;F|Ford Motor Company|CD;FTNT|Fortinet|IT;
FTV|Fortive|IN;FOXA|Fox Corporation (Class A)|CM;FOX|Fox Corporation (Class B)|CM;
BEN|Franklin Resources|FI;FCX|Freeport-McMoRan|MA;GRMN|Garmin|CD;IT|Gartner|IT;
GE|GE Aerospace|IN;GEHC|GE HealthCare|HC;GEV|GE Vernova|IN;GEN|Gen Digital|IT;GNRC|Generac|IN;
GD|General Dynamics|IN;GIS|General Mills|CS;GM|General Motors|CD;GPC|Genuine Parts Company|CD;
GILD|Gilead Sciences|HC;GPN|Global Payments|FI;GL|Globe Life|FI;GDDY|GoDaddy|IT;
GS|Goldman Sachs|FI;HAL|Halliburton|EN;HIG|Hartford (The)|FI;HAS|Hasbro|CD;
HCA|HCA Healthcare|HC;DOC|Healthpeak Properties|RE;HSIC|Henry Schein|HC;
HSY|Hershey Company (The)|CS;HPE|Hewlett Packard Enterprise|IT;HLT|Hilton Worldwide|CD;
HD|Home Depot (The)|CD;HONA|Honeywell Aerospace|IN;HON|Honeywell Technologies|IN;
HRL|Hormel Foods|CS;HST|Host Hotels & Resorts|RE;HWM|Howmet Aerospace|IN;HPQ|HP Inc.|IT;
HUBB|Hubbell Incorporated|IN;HUM|Humana|HC;HBAN|Huntington Bancshares|FI;
HII|Huntington Ingalls Industries|IN;IBM|IBM|IT;IEX|IDEX Corporation|IN;
IDXX|Idexx Laboratories|HC;ITW|Illinois Tool Works|IN;INCY|Incyte|HC;IR|Ingersoll Rand|IN;
PODD|Insulet Corporation|HC;INTC|Intel|IT;IBKR|Interactive Brokers|FI;
ICE|Intercontinental Exchange|FI;IFF|International Flavors & Fragrances|MA;
IP|International Paper|MA;INTU|Intuit|IT;ISRG|Intuitive Surgical|HC;IVZ|Invesco|FI;
INVH|Invitation Homes|RE;IQV|IQVIA|HC;IRM|Iron Mountain|RE;JBHT|J.B. Hunt|IN;JBL|Jabil|IT;
JKHY|Jack Henry & Associates|FI;J|Jacobs Solutions|IN;JNJ|Johnson & Johnson|HC;
JCI|Johnson Controls|IN;JPM|JPMorgan Chase|FI;KVUE|Kenvue|CS;KDP|Keurig Dr Pepper|CS;
KEY|KeyCorp|FI;KEYS|Keysight Technologies|IT;KMB|Kimberly-Clark|CS;KIM|Kimco Realty|RE;
KMI|Kinder Morgan|EN;KKR|KKR & Co.|FI;KLAC|KLA Corporation|IT;KHC|Kraft Heinz|CS;KR|Kroger|CS;
LHX|L3Harris|IN;LH|Labcorp|HC;LRCX|Lam Research|IT;LVS|Las Vegas Sands|CD;LDOS|Leidos|IN;
LEN|Lennar|CD;LII|Lennox International|IN;LLY|Lilly (Eli)|HC;LIN|Linde plc|MA;
LYV|Live Nation Entertainment|CM;LMT|Lockheed Martin|IN;L|Loews Corporation|FI;LOW|Lowe's|CD;
LULU|Lululemon Athletica|CD;LITE|Lumentum|IT;LYB|LyondellBasell|MA;MTB|M&T Bank|FI;
MPC|Marathon Petroleum|EN;MAR|Marriott International|CD;MRSH|Marsh McLennan|FI;
MLM|Martin Marietta Materials|MA;MRVL|Marvell Technology|IT;MAS|Masco|IN;MA|Mastercard|FI;
MKC|McCormick & Company|CS;MCD|McDonald's|CD;MCK|McKesson Corporation|HC;MDT|Medtronic|HC;
MRK|Merck & Co.|HC;META|Meta Platforms|CM;MET|MetLife|FI;MTD|Mettler Toledo|HC;
MGM|MGM Resorts|CD;MCHP|Microchip Technology|IT;MU|Micron Technology|IT;MSFT|Microsoft|IT;
MAA|Mid-America Apartment Communities|RE;MRNA|Moderna|HC;TAP|Molson Coors Beverage Company|CS;
MDLZ|Mondelez International|CS;MPWR|Monolithic Power Systems|IT;MNST|Monster Beverage|CS;
MCO|Moody's Corporation|FI;MS|Morgan Stanley|FI;MOS|Mosaic Company (The)|MA;
MSI|Motorola Solutions|IT;MSCI|MSCI Inc.|FI;NDAQ|Nasdaq, Inc.|FI;NTAP|NetApp|IT;
NFLX|Netflix|CM;NEM|Newmont|MA;NWSA|News Corp (Class A)|CM;NWS|News Corp (Class B)|CM;
NEE|NextEra Energy|UT;NKE|Nike, Inc.|CD;NI|NiSource|UT;NDSN|Nordson Corporation|IN;
NSC|Norfolk Southern|IN;NTRS|Northern Trust|FI;NOC|Northrop Grumman|IN;
NCLH|Norwegian Cruise Line Holdings|CD;NRG|NRG Energy|UT;NUE|Nucor|MA;NVDA|Nvidia|IT;
NVR|NVR, Inc.|CD;NXPI|NXP Semiconductors|IT;ORLY|O’Reilly Automotive|CD;
OXY|Occidental Petroleum|EN;ODFL|Old Dominion|IN;OMC|Omnicom Group|CM;ON|ON Semiconductor|IT;
OKE|Oneok|EN;ORCL|Oracle Corporation|IT;OTIS|Otis Worldwide|IN;PCAR|Paccar|IN;
PKG|Packaging Corporation of America|MA;PLTR|Palantir Technologies|IT;
PANW|Palo Alto Networks|IT;PSKY|Paramount Skydance Corporation|CM;PH|Parker Hannifin|IN;
PAYX|Paychex|IN;PYPL|PayPal|FI;PNR|Pentair|IN;PEP|PepsiCo|CS;PFE|Pfizer|HC;
PCG|PG&E Corporation|UT;PM|Philip Morris International|CS;PSX|Phillips 66|EN;
PNW|Pinnacle West Capital|UT;PNC|PNC Financial Services|FI;PPG|PPG Industries|MA;
PPL|PPL Corporation|UT;PFG|Principal Financial Group|FI;PG|Procter & Gamble|CS;
PGR|Progressive Corporation|FI;PLD|Prologis|RE;PRU|Prudential Financial|FI;
PEG|Public Service Enterprise Group|UT;PTC|PTC Inc.|IT;PSA|Public Storage|RE;
PHM|PulteGroup|CD;PWR|Quanta Services|IN;QCOM|Qualcomm|IT;DGX|Quest Diagnostics|HC;
Q|Qnity Electronics|IT;RL|Ralph Lauren Corporation|CD;RJF|Raymond James Financial|FI;
RTX|RTX Corporation|IN;O|Realty Income|RE;REG|Regency Centers|RE;
REGN|Regeneron Pharmaceuticals|HC;RF|Regions Financial Corporation|FI;
RSG|Republic Services|IN;RMD|ResMed|HC;RVTY|Revvity|HC;HOOD|Robinhood Markets|FI;
ROK|Rockwell Automation|IN;ROL|Rollins, Inc.|IN;ROP|Roper Technologies|IT;ROST|Ross Stores|CD;
RCL|Royal Caribbean Group|CD;SPGI|S&P Global|FI;CRM|Salesforce|IT;SNDK|Sandisk|IT;
SBAC|SBA Communications|RE;SLB|Schlumberger|EN;STX|Seagate Technology|IT;SRE|Sempra|UT;
NOW|ServiceNow|IT;SHW|Sherwin-Williams|MA;SPG|Simon Property Group|RE;
SWKS|Skyworks Solutions|IT;SJM|J.M. Smucker Company (The)|CS;SW|Smurfit Westrock|MA;
SNA|Snap-on|IN;SOLV|Solventum|HC;SO|Southern Company|UT;LUV|Southwest Airlines|IN;
SWK|Stanley Black & Decker|IN;SBUX|Starbucks|CD;STT|State Street Corporation|FI;
STLD|Steel Dynamics|MA;STE|Steris|HC;SYK|Stryker Corporation|HC;SMCI|Supermicro|IT;
SYF|Synchrony Financial|FI;SNPS|Synopsys|IT;SYY|Sysco|CS;TMUS|T-Mobile US|CM;
TROW|T. Rowe Price|FI;TTWO|Take-Two Interactive|CM;TPR|Tapestry, Inc.|CD;
TRGP|Targa Resources|EN;TGT|Target Corporation|CS;TEL|TE Connectivity|IT;
TDY|Teledyne Technologies|IT;TER|Teradyne|IT;TSLA|Tesla, Inc.|CD;TXN|Texas Instruments|IT;
TPL|Texas Pacific Land Corporation|EN;TXT|Textron|IN;TMO|Thermo Fisher Scientific|HC;
TJX|TJX Companies|CD;TKO|TKO Group Holdings|CM;TTD|Trade Desk (The)|CM;TSCO|Tractor Supply|CD;
TT|Trane Technologies|IN;TDG|TransDigm Group|IN;TRV|Travelers Companies (The)|FI;
TRMB|Trimble Inc.|IT;TFC|Truist Financial|FI;TYL|Tyler Technologies|IT;TSN|Tyson Foods|CS;
USB|U.S. Bancorp|FI;UBER|Uber|IN;UDR|UDR, Inc.|RE;ULTA|Ulta Beauty|CD;
UNP|Union Pacific Corporation|IN;UAL|United Airlines Holdings|IN;UPS|United Parcel Service|IN;
URI|United Rentals|IN;UNH|UnitedHealth Group|HC;UHS|Universal Health Services|HC;
VLO|Valero Energy|EN;VEEV|Veeva Systems|HC;VTR|Ventas|RE;VLTO|Veralto|IN;VRSN|Verisign|IT;
VRSK|Verisk Analytics|IN;VZ|Verizon|CM;VRTX|Vertex Pharmaceuticals|HC;VRT|Vertiv|IN;
VTRS|Viatris|HC;VICI|Vici Properties|RE;V|Visa Inc.|FI;VST|Vistra Corp.|UT;
VMC|Vulcan Materials Company|MA;WRB|W. R. Berkley Corporation|FI;GWW|W. W. Grainger|IN;
WAB|Wabtec|IN;WMT|Walmart|CS;DIS|Walt Disney Company (The)|CM;WBD|Warner Bros. Discovery|CM;
WM|Waste Management|IN;WAT|Waters Corporation|HC;WEC|WEC Energy Group|UT;WFC|Wells Fargo|FI;
WELL|Welltower|RE;WST|West Pharmaceutical Services|HC;WDC|Western Digital|IT;
WY|Weyerhaeuser|RE;WSM|Williams-Sonoma, Inc.|CD;WMB|Williams Companies|EN;
WTW|Willis Towers Watson|FI;WDAY|Workday, Inc.|IT;WYNN|Wynn Resorts|CD;XEL|Xcel Energy|UT;
XYL|Xylem Inc.|IN;YUM|Yum! Brands|CD;ZBRA|Zebra Technologies|IT;ZBH|Zimmer Biomet|HC;
ZTS|Zoetis|HC
"""


@dataclass(frozen=True)
class Constituent:
    """One row of the constituents page."""

    symbol: str
    name: str
    sector: str = ""
    cik: str = ""  # the page's CIK column; blank when unknown


@dataclass(frozen=True)
class IndexChange:
    """One row of the page's changes table: on ``date``, ``added`` joined and ``removed`` left."""

    date: dt.date
    added: str = ""
    added_name: str = ""
    removed: str = ""
    removed_name: str = ""
    reason: str = ""


@dataclass(frozen=True)
class TickerEvent:
    """A vendor ticker event: the security known by ``security`` traded as ``ticker`` from ``date``."""

    security: str  # the id the events endpoint is asked with (the security's current ticker)
    date: dt.date
    ticker: str


@dataclass(frozen=True)
class Split:
    """``split_from`` old shares became ``split_to`` new ones on ``execution_date``."""

    ticker: str
    execution_date: dt.date
    split_from: float
    split_to: float

    def __post_init__(self) -> None:
        # whole numbers as int, so that they print as Polygon's ``1`` and ``20``
        for name in ("split_from", "split_to"):
            value = float(getattr(self, name))
            object.__setattr__(self, name, int(value) if value.is_integer() else value)

    @property
    def ratio(self) -> float:
        return self.split_to / self.split_from


@dataclass(frozen=True)
class Dividend:
    """A cash dividend of ``cash_amount`` per share, for holders before ``ex_dividend_date``."""

    ticker: str
    ex_dividend_date: dt.date
    cash_amount: float
    currency: str = "USD"
    declaration_date: Optional[dt.date] = None
    record_date: Optional[dt.date] = None
    pay_date: Optional[dt.date] = None
    frequency: Optional[int] = 4
    distribution_type: str = "recurring"


class TickerBars(NamedTuple):
    """One ticker's bars as traded."""

    days: np.ndarray            # datetime64[D], ascending, unique
    values: np.ndarray          # float64, shape (len(days), 7), VALUE_COLUMNS order; NaN = no value
    has_vwap: bool              # False: the source had no vwap column (Polygon omits "vw")
    has_transactions: bool      # False: the source had no transactions column (omits "n")

    def between(self, start: Optional[DateLike] = None, end: Optional[DateLike] = None) -> "TickerBars":
        """The bars with ``start <= date <= end`` (either bound may be None)."""
        lo = 0 if start is None else int(np.searchsorted(self.days, to_day(start), "left"))
        hi = len(self.days) if end is None else int(np.searchsorted(self.days, to_day(end), "right"))
        return self._replace(days=self.days[lo:hi], values=self.values[lo:hi])


class _DayIndex(NamedTuple):
    days: np.ndarray            # every bar's date, ascending
    owners: np.ndarray          # position in ``series`` of each bar's ticker
    rows: np.ndarray            # each bar's row in its ticker's arrays
    names: list
    series: list                # the TickerBars the index was built from


def to_day(value: DateLike) -> np.datetime64:
    return np.datetime64(pd.Timestamp(value).date(), "D")


def to_date(value: DateLike) -> dt.date:
    return pd.Timestamp(value).date()


def sp500_companies() -> list[Constituent]:
    """The embedded S&P 500 list, in the page's order (BRK.B, BF.B in Polygon's dotted form)."""
    entries = "".join(_SP500.split("\n")).split(";")
    return [Constituent(symbol, name, SECTORS[code])
            for symbol, name, code in (entry.split("|") for entry in entries)]


def adjust(values: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Split-adjust as-traded ``values``: prices divided by ``factors``, volume multiplied."""
    adjusted = values.copy()
    adjusted[:, _PRICE_LIKE] /= factors[:, None]
    adjusted[:, VOLUME] *= factors
    return adjusted


class MarketData:
    """Daily bars as traded, split events, and the rows of the constituents page.

    ``bars`` is a bars frame (see ``CandleThrob.bars``); ``vwap`` and
    ``transactions`` may be left out. Without ``constituents`` the page lists
    every ticker that is not in ``ETF_TICKERS``, named by its symbol.
    """

    def __init__(self, bars: Optional[pd.DataFrame] = None, splits: Iterable[Split] = (),
                 constituents: Optional[Iterable[Constituent]] = None, dividends: Iterable[Dividend] = ()):
        self._lock = threading.Lock()
        self._series: dict[str, TickerBars] = {}
        self._splits: dict[str, tuple[Split, ...]] = {}
        self._dividends: dict[str, tuple[Dividend, ...]] = {}
        # Records served exactly as given, after the well-formed ones: what a vendor's bug looks like.
        self.raw_split_records: list[dict] = []
        self.raw_dividend_records: list[dict] = []
        self._index: Optional[_DayIndex] = None
        self._version = 0
        if bars is not None:
            self.add_bars(bars)
        for split in splits:
            self.add_split(split.ticker, split.execution_date, split.split_from, split.split_to,
                           reprice=False)
        for dividend in dividends:
            self.add_dividend(dividend)
        if constituents is None:
            constituents = [Constituent(t, t) for t in self.tickers if t not in ETF_TICKERS]
        self._constituents = tuple(constituents)
        self.index_changes: list[IndexChange] = []  # the page's changes table, newest first
        self.ticker_events: list[TickerEvent] = []  # what /vX/reference/tickers/{id}/events answers

    # -- bars ---------------------------------------------------------------

    @property
    def tickers(self) -> list[str]:
        return sorted(self._series)

    @property
    def version(self) -> int:
        """A number that changes whenever bars or splits change (answers built from them are stale)."""
        return self._version

    @property
    def last_date(self) -> Optional[dt.date]:
        ends = [s.days[-1] for s in self._series.values()]
        return max(ends).item() if ends else None

    def ticker_bars(self, ticker: str) -> Optional[TickerBars]:
        return self._series.get(ticker)

    def on_day(self, day: DateLike) -> list[tuple[str, TickerBars, int]]:
        """``(ticker, its bars, row)`` of every bar dated ``day``, by ticker."""
        index = self._index or self._build_index()
        day = to_day(day)
        lo, hi = np.searchsorted(index.days, day, "left"), np.searchsorted(index.days, day, "right")
        return [(index.names[o], index.series[o], r)
                for o, r in zip(index.owners[lo:hi].tolist(), index.rows[lo:hi].tolist())]

    def bars(self, ticker: Optional[str] = None, start: Optional[DateLike] = None,
             end: Optional[DateLike] = None, *, adjusted: bool = False,
             today: Optional[DateLike] = None) -> pd.DataFrame:
        """A bars frame, as traded or split-adjusted as the server would answer.

        ``today`` plays the server's "now": no bar after it, no split after it applied.
        """
        if today is not None:
            end = today if end is None else min(to_date(end), to_date(today))
        frames = []
        for name in [ticker] if ticker else self.tickers:
            series = self._series.get(name)
            if series is None:
                continue
            series = series.between(start, end)
            values = series.values
            if adjusted:
                values = adjust(values, self.split_factors(name, series.days, today))
            frame = pd.DataFrame(values, columns=list(VALUE_COLUMNS))
            frame.insert(0, "trade_date", series.days.astype("datetime64[ns]"))
            frame.insert(0, "ticker", pd.Series([name] * len(frame), dtype=object))
            frames.append(frame)
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True)[list(BAR_COLUMNS)] if frames else empty_bars()

    def add_bars(self, frame: pd.DataFrame) -> None:
        """Add bars (a bars frame); a bar for an existing (ticker, date) replaces it."""
        missing = {"ticker", "trade_date", *VALUE_COLUMNS[:5]} - set(frame.columns)
        if missing:
            raise ValueError(f"bars frame lacks columns {sorted(missing)}")
        if frame.empty:
            return
        frame = frame.sort_values(["ticker", "trade_date"], kind="stable")
        tickers = frame["ticker"].astype(str).to_numpy()
        days = frame["trade_date"].to_numpy().astype("datetime64[D]")
        nan = np.full(len(frame), np.nan)
        values = np.column_stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64")
                                  if c in frame.columns else nan for c in VALUE_COLUMNS])
        starts = np.flatnonzero(np.r_[True, tickers[1:] != tickers[:-1]])
        ends = np.r_[starts[1:], len(tickers)]
        with self._lock:
            for lo, hi in zip(starts.tolist(), ends.tolist()):
                new = TickerBars(days[lo:hi], values[lo:hi], "vwap" in frame.columns,
                                 "transactions" in frame.columns)
                self._series[tickers[lo]] = _merge(self._series.get(tickers[lo]), new)
            self._index = None
            self._version += 1

    def _put(self, ticker: str, series: TickerBars) -> None:
        with self._lock:
            self._series[ticker] = series
            self._index = None
            self._version += 1

    def _build_index(self) -> _DayIndex:
        with self._lock:
            names = self.tickers
            series = [self._series[n] for n in names]
            lengths = [len(s.days) for s in series]
            days = np.concatenate([s.days for s in series]) if series else np.array([], "datetime64[D]")
            owners = np.repeat(np.arange(len(series)), lengths)
            rows = np.concatenate([np.arange(n) for n in lengths]) if series else np.array([], int)
            # stable: bars of one day stay in ticker order
            order = np.argsort(days, kind="stable")
            self._index = _DayIndex(days[order], owners[order], rows[order], names, series)
            return self._index

    # -- splits -------------------------------------------------------------

    @property
    def splits(self) -> list[Split]:
        """Every split, by date then ticker."""
        every = [s for splits in self._splits.values() for s in splits]
        return sorted(every, key=lambda s: (s.execution_date, s.ticker))

    def add_split(self, ticker: str, execution_date: DateLike, split_from: float, split_to: float,
                  *, reprice: bool = True) -> Split:
        """Record a split (replacing one of that ticker on that date).

        With ``reprice`` the bars from ``execution_date`` on are turned into what
        would have traded after such a split (prices divided by split_to/split_from,
        rounded to 4 decimals; volume multiplied, rounded to whole shares), so
        the adjusted series stays continuous. Loaders pass ``reprice=False``:
        their bars already are as traded.
        """
        split = Split(ticker, to_date(execution_date), split_from, split_to)
        with self._lock:
            others = [s for s in self._splits.get(ticker, ()) if s.execution_date != split.execution_date]
            self._splits[ticker] = tuple(sorted(others + [split], key=lambda s: s.execution_date))
            self._version += 1
            series = self._series.get(ticker)
            if reprice and series is not None:
                after = series.days >= to_day(split.execution_date)
                values = series.values.copy()
                values[np.ix_(after, _PRICE_LIKE)] = np.round(values[np.ix_(after, _PRICE_LIKE)] / split.ratio, 4)
                values[after, VOLUME] = np.round(values[after, VOLUME] * split.ratio)
                self._series[ticker] = series._replace(values=values)
                self._index = None
        return split

    def split_factors(self, ticker: str, days: np.ndarray, today: Optional[DateLike] = None) -> np.ndarray:
        """Per day, the product of split_to/split_from of the ticker's splits after
        that day and on or before ``today`` (None: all), multiplied in date order."""
        factors = np.ones(len(days))
        for split in self._splits.get(ticker, ()):
            if today is not None and split.execution_date > to_date(today):
                break
            factors[days < to_day(split.execution_date)] *= split.ratio
        return factors

    def historical_split_factor(self, split: Split, today: Optional[DateLike] = None) -> float:
        """The vendor's ``historical_adjustment_factor`` of a split: what prices before it are
        multiplied by to be on today's share basis (split_from/split_to of it and every later split)."""
        factor = 1.0
        for other in self._splits.get(split.ticker, ()):
            happened = today is None or other.execution_date <= to_date(today)
            if other.execution_date >= split.execution_date and happened:
                factor *= other.split_from / other.split_to
        return factor

    # -- dividends ------------------------------------------------------------

    @property
    def dividends(self) -> list[Dividend]:
        """Every dividend, by ex-date then ticker."""
        every = [d for dividends in self._dividends.values() for d in dividends]
        return sorted(every, key=lambda d: (d.ex_dividend_date, d.ticker))

    def add_dividend(self, dividend: Dividend) -> None:
        """Record a dividend (replacing one of that ticker on that ex-date). Bars are as traded
        and stay as they are: the price drop on the ex-date is already in them."""
        with self._lock:
            others = [d for d in self._dividends.get(dividend.ticker, ())
                      if d.ex_dividend_date != dividend.ex_dividend_date]
            self._dividends[dividend.ticker] = tuple(sorted(others + [dividend], key=lambda d: d.ex_dividend_date))

    def dividend_factor(self, dividend: Dividend) -> float:
        """``1 - cash / raw close of the session before the ex-date`` (1 when that close is unknown)."""
        series = self._series.get(dividend.ticker)
        if series is None:
            return 1.0
        row = int(np.searchsorted(series.days, to_day(dividend.ex_dividend_date), "left")) - 1
        close = series.values[row, CLOSE] if row >= 0 else np.nan
        return 1.0 - dividend.cash_amount / close if close > 0 else 1.0

    def historical_dividend_factor(self, dividend: Dividend, today: Optional[DateLike] = None) -> float:
        """The vendor's ``historical_adjustment_factor`` of a dividend: the product of the
        dividend factors of it and every later dividend of the ticker (CRSP's convention)."""
        factor = 1.0
        for other in self._dividends.get(dividend.ticker, ()):
            if other.ex_dividend_date >= dividend.ex_dividend_date and (
                    today is None or other.ex_dividend_date <= to_date(today)):
                factor *= self.dividend_factor(other)
        return factor

    # -- the constituents page ----------------------------------------------

    @property
    def constituents(self) -> tuple[Constituent, ...]:
        return self._constituents

    def add_constituent(self, symbol: str, name: Optional[str] = None, sector: str = "") -> None:
        """Put ``symbol`` on the page (last), or replace its row."""
        with self._lock:
            rows = [c for c in self._constituents if c.symbol != symbol]
            self._constituents = tuple(rows + [Constituent(symbol, name or symbol, sector)])

    def remove_constituent(self, symbol: str) -> None:
        """Take ``symbol`` off the page; its bars stay, as Polygon keeps a former member's."""
        with self._lock:
            self._constituents = tuple(c for c in self._constituents if c.symbol != symbol)


def _merge(old: Optional[TickerBars], new: TickerBars) -> TickerBars:
    """``old`` and ``new`` bars, by date; on equal dates the later one wins."""
    parts = [new] if old is None else [old, new]
    days = np.concatenate([p.days for p in parts])
    values = np.concatenate([p.values for p in parts])
    order = np.argsort(days, kind="stable")
    days, values = days[order], values[order]
    last_of_day = np.r_[days[1:] != days[:-1], True]
    return TickerBars(days[last_of_day], values[last_of_day],
                      any(p.has_vwap for p in parts), any(p.has_transactions for p in parts))


# -- generated data -----------------------------------------------------------

def generate_market(n_tickers: int, start: DateLike, end: DateLike, seed: int = 0) -> MarketData:
    """The first ``n_tickers`` S&P 500 companies plus ``ETF_TICKERS``, with bars on
    every NYSE session from ``start`` to ``end`` and no splits.

    Each ticker's walk depends only on (seed, ticker, start): a later ``end``
    appends bars and leaves the earlier ones as they were, so a test can
    "let a session pass" by generating a longer range and adding the new bars.
    """
    companies = sp500_companies()
    if not 0 <= n_tickers <= len(companies):
        raise ValueError(f"n_tickers must be 0..{len(companies)}, not {n_tickers}")
    calendar = TradingCalendar()
    if pd.Timestamp(end) > calendar.last_session:
        calendar = TradingCalendar(end=end)
    days = calendar.sessions_in_range(start, end).to_numpy().astype("datetime64[D]")
    market = MarketData(constituents=companies[:n_tickers])
    for ticker in [c.symbol for c in companies[:n_tickers]] + list(ETF_TICKERS):
        if len(days):
            market._put(ticker, TickerBars(days, _random_walk(ticker, seed, len(days)), True, True))
    return market


def _random_walk(ticker: str, seed: int, n: int) -> np.ndarray:
    """``n`` consistent daily bars: low <= open, close, vwap <= high, all > 0."""
    # crc32, unlike hash(), is the same in every process
    rng = np.random.default_rng([seed, zlib.crc32(ticker.encode())])
    first_price = np.exp(rng.uniform(np.log(15), np.log(400)))
    sigma = rng.uniform(0.008, 0.03)
    mean_volume = np.exp(rng.uniform(np.log(3e5), np.log(3e7)))
    shares_per_trade = rng.uniform(80, 250)
    # drawn row by row, so a longer range extends the same walk
    z = rng.standard_normal((n, 6))
    close = np.maximum(first_price * np.exp(np.cumsum(0.0003 + sigma * z[:, 0])), 1.0)
    open_ = np.r_[first_price, close[:-1]] * np.exp(0.25 * sigma * z[:, 1])
    high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(z[:, 2]))
    low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(z[:, 3]))
    open_, high, low, close = (np.round(p, 4) for p in (open_, high, low, close))
    # rounding is monotone, so a point between the rounded low and high stays there
    vwap = np.round(low + (high - low) / (1 + np.exp(-z[:, 4])), 4)
    volume = np.maximum(np.round(mean_volume * np.exp(0.4 * z[:, 5])), 100)
    transactions = np.maximum(np.round(volume / shares_per_trade), 1)
    return np.column_stack([open_, high, low, close, volume, vwap, transactions])


# -- the rest of the market ------------------------------------------------------

# A real grouped-daily answer lists ~11,000 US symbols, of which the index and the
# ETFs are ~5%. Besides plain 1-5 letter symbols they come in these shapes, in
# Polygon's spelling: name: (share of the population, root lengths, suffixes).
SYMBOL_SHAPES = {
    "class_share": (0.015, (2, 3, 4), (".A", ".B", ".A", ".B", ".C")),  # BRK.A, BF.B
    "warrant": (0.03, (3, 4), (".WS",)),                                 # ABC.WS
    "warrant_series": (0.005, (3, 4), (".WS.A", ".WS.B")),               # ABC.WS.A
    "unit": (0.015, (3, 4), (".U",)),                                    # ABC.U
    "right": (0.005, (3, 4), (".RT",)),                                  # ABC.RT
    "preferred": (0.07, (1, 2, 3, 4), tuple("p" + c for c in "ABCDEFGHIJK")),  # ABCpA for ABC-PA
    "when_issued": (0.002, (2, 3, 4), ("w",)),                           # ABCw, lower case
}
# Exchange test symbols, which real answers carry on every session.
TEST_SYMBOLS = ("ZVZZT", "ZWZZT", "ZXZZT", "ZBZZT", "ZJZZT", "NTEST")
# Lengths of plain symbols: mostly 3-4 letters, few single letters (26 exist).
_PLAIN_LENGTHS = ((1, 2, 3, 4, 5), (0.002, 0.04, 0.33, 0.52, 0.108))
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_POPULATION_STREAM = 0x5EED  # keeps the population's draws apart from the index's walks
_BLOCK = 1024  # symbols drawn per call to the generator


def _candidates(rng: np.random.Generator, lengths: tuple, weights: Optional[tuple],
                suffixes: tuple) -> Iterable[str]:
    """Endless random ``root + suffix`` symbols, drawn a block at a time."""
    while True:
        sizes = rng.choice(lengths, size=_BLOCK, p=weights).tolist()
        letters = rng.integers(0, len(_LETTERS), size=(_BLOCK, max(lengths))).tolist()
        ends = rng.integers(0, len(suffixes), size=_BLOCK).tolist()
        for size, row, end in zip(sizes, letters, ends):
            yield "".join(_LETTERS[i] for i in row[:size]) + suffixes[end]


def market_symbols(count: int, seed: int = 0, reserved: Iterable[str] = ()) -> list[str]:
    """``count`` distinct symbols shaped like a real grouped answer's, none in ``reserved``,
    in a random order: the test symbols first in line (as many as fit), then each of
    ``SYMBOL_SHAPES`` for round(share * count) (as many as fit), and plain 1-5 letter
    symbols for the rest. A function of (count, seed, reserved) only."""
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    rng = np.random.default_rng([seed, _POPULATION_STREAM, 0])
    taken = set(reserved)
    symbols = [s for s in TEST_SYMBOLS if s not in taken][:count]
    taken.update(symbols)
    quotas = [(round(share * count), _candidates(rng, lengths, None, suffixes))
              for share, lengths, suffixes in SYMBOL_SHAPES.values()]
    quotas.append((count, _candidates(rng, *_PLAIN_LENGTHS, ("",))))
    for quota, candidates in quotas:
        wanted = min(len(symbols) + quota, count)
        while len(symbols) < wanted:
            symbol = next(candidates)
            if symbol not in taken:
                taken.add(symbol)
                symbols.append(symbol)
    return [symbols[i] for i in rng.permutation(len(symbols)).tolist()]


class MarketPopulation:
    """The rest of a US market around the index: ``symbols`` with cheap daily bars.

    A session's bars are drawn afresh around each symbol's own price and volume
    level from (seed, date) alone, not walked from the session before, so any
    session costs the same few vectorised draws. They are consistent (0 < low <=
    open, close, vwap <= high; volume and transactions >= 1) and exact at Polygon's
    precision: prices are whole 1/``PRICE_SCALE`` dollars, volume and
    transactions whole numbers.
    """

    PRICE_SCALE = 10_000

    def __init__(self, symbols: Iterable[str], seed: int = 0):
        self.symbols = tuple(symbols)
        self.seed = seed
        n = len(self.symbols)
        rng = np.random.default_rng([seed, _POPULATION_STREAM, 1])
        self._price = np.exp(rng.uniform(np.log(0.05), np.log(800), n))
        self._sigma = rng.uniform(0.01, 0.06, n)
        self._volume = np.exp(rng.uniform(np.log(200), np.log(2e7), n))
        self._shares_per_trade = rng.uniform(50, 400, n)

    @classmethod
    def around(cls, market: MarketData, size: int, seed: int = 0) -> "MarketPopulation":
        """The others of a ``size``-symbol market around ``market``'s tickers (none when
        those are ``size`` or more). No symbol of the embedded S&P 500 or the ETFs is
        among them, so that such a ticker added to ``market`` later is never listed twice."""
        reserved = {*market.tickers, *(c.symbol for c in sp500_companies()), *ETF_TICKERS}
        return cls(market_symbols(max(0, size - len(market.tickers)), seed, reserved), seed)

    def day_values(self, day: DateLike) -> np.ndarray:
        """int64, one row per symbol, ``VALUE_COLUMNS`` order, prices in 1/PRICE_SCALE dollars."""
        rng = np.random.default_rng([self.seed, _POPULATION_STREAM, 2, to_date(day).toordinal()])
        z = rng.standard_normal((len(self.symbols), 6))
        sigma = self._sigma
        open_ = self._price * np.exp(sigma * z[:, 0])
        close = self._price * np.exp(sigma * z[:, 1])
        high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(z[:, 2]))
        low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(z[:, 3]))
        vwap = low + (high - low) / (1 + np.exp(-z[:, 4]))
        # rounding and max(., 1) are monotone: the order of the prices survives them
        prices = np.maximum(np.rint(np.column_stack([open_, high, low, close, vwap]) * self.PRICE_SCALE), 1)
        volume = np.maximum(np.rint(self._volume * np.exp(0.5 * z[:, 5])), 1)
        transactions = np.maximum(np.rint(volume / self._shares_per_trade), 1)
        return np.column_stack([prices[:, :4], volume, prices[:, 4], transactions]).astype(np.int64)

    def bars(self, day: DateLike) -> pd.DataFrame:
        """The session's bars as a bars frame, in ``symbols`` order (what a client parses from them)."""
        values = self.day_values(day).astype("float64")
        values[:, _PRICE_LIKE] /= self.PRICE_SCALE
        frame = pd.DataFrame(values, columns=list(VALUE_COLUMNS))
        frame.insert(0, "trade_date", np.full(len(frame), to_day(day)).astype("datetime64[ns]"))
        frame.insert(0, "ticker", pd.Series(self.symbols, dtype=object))
        return frame[list(BAR_COLUMNS)]


# -- files ----------------------------------------------------------------------

_FILE_PREFIXES = ("daily_adjusted_", "daily_", "WIKI-")


def ticker_from_file_name(path: Union[str, Path]) -> str:
    """``daily_adjusted_AAPL.csv`` -> AAPL, ``daily_SPY.csv.gz`` -> SPY, ``BRK-A`` -> BRK.A."""
    name = Path(path).name
    for suffix in (".gz", ".csv"):
        name = name.removesuffix(suffix)
    for prefix in _FILE_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    # share classes: Polygon writes BRK.A where Yahoo-style file names have BRK-A
    return name.upper().replace("-", ".")


def _columns(frame: pd.DataFrame) -> dict[str, str]:
    return {str(c).strip().lower(): c for c in frame.columns}


def _split_from_coefficient(ticker: str, day: dt.date, coefficient: float) -> Split:
    # a fraction, not round(): 1.5 is a 3-for-2 split and 0.5 a 1-for-2 reverse one
    ratio = Fraction(coefficient).limit_denominator(1000)
    return Split(ticker, day, ratio.denominator, ratio.numerator)


def load_bars_csv(path: Union[str, Path], ticker: Optional[str] = None) -> tuple[pd.DataFrame, list[Split]]:
    """Bars (a bars frame, as traded) and the splits found in one CSV file (gzip ok); see ``load_market_file``."""
    frame, splits, _ = load_market_file(path, ticker)
    return frame, splits


def load_market_file(path: Union[str, Path], ticker: Optional[str] = None
                     ) -> tuple[pd.DataFrame, list[Split], list[Dividend]]:
    """Bars (a bars frame, as traded), splits and cash dividends found in one CSV file (gzip ok).

    Columns are matched by name in any case: ticker (or name, symbol), date (or
    timestamp), open, high, low, close, volume, optional vwap and transactions.
    Without a ticker column the ticker is ``ticker`` or comes from the file name
    (Alpha Vantage's ``daily_adjusted_AAPL.csv``). A ``split_coefficient`` (Alpha
    Vantage) or ``split ratio`` (Quandl) column other than 1 yields splits; a
    ``dividend_amount`` (Alpha Vantage) or ``ex-dividend`` (Quandl) above 0 yields a
    cash dividend with that ex-date.
    """
    raw = pd.read_csv(path)
    columns = _columns(raw)

    def pick(*names: str) -> Optional[str]:
        return next((columns[n] for n in names if n in columns), None)

    date_column = pick("date", "timestamp")
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in columns]
    if date_column is None or missing:
        raise ValueError(f"{path}: no column for {missing or ['date']}")
    ticker_column = pick("ticker", "name", "symbol")
    frame = pd.DataFrame({
        "ticker": (raw[ticker_column].astype(str).str.strip().str.upper() if ticker_column
                   else ticker or ticker_from_file_name(path)),
        "trade_date": pd.to_datetime(raw[date_column]).dt.normalize().astype("datetime64[ns]"),
    })
    for name in VALUE_COLUMNS:
        if name in columns:
            frame[name] = pd.to_numeric(raw[columns[name]], errors="coerce")
    splits = []
    coefficient_column = pick("split_coefficient", "split ratio")
    if coefficient_column is not None:
        coefficients = pd.to_numeric(raw[coefficient_column], errors="coerce")
        events = frame[coefficients.notna() & (coefficients > 0) & (coefficients != 1)]
        splits = [_split_from_coefficient(t, day.date(), c) for t, day, c in
                  zip(events["ticker"], events["trade_date"], coefficients[events.index])]
    dividends = []
    cash_column = pick("dividend_amount", "ex-dividend")
    if cash_column is not None:
        cash = pd.to_numeric(raw[cash_column], errors="coerce")
        events = frame[cash.notna() & (cash > 0)]
        dividends = [Dividend(t, day.date(), float(c)) for t, day, c in
                     zip(events["ticker"], events["trade_date"], cash[events.index])]
    # Alpha Vantage files run newest first
    return frame.sort_values(["ticker", "trade_date"], kind="stable", ignore_index=True), splits, dividends


def load_splits_csv(path: Union[str, Path]) -> list[Split]:
    """Splits from a CSV with columns ticker, execution_date, split_from, split_to (any case)."""
    raw = pd.read_csv(path)
    columns = _columns(raw)
    missing = [c for c in ("ticker", "execution_date", "split_from", "split_to") if c not in columns]
    if missing:
        raise ValueError(f"{path}: no column for {missing}")
    return [Split(str(t).strip().upper(), to_date(d), f, s) for t, d, f, s in zip(
        *(raw[columns[c]] for c in ("ticker", "execution_date", "split_from", "split_to")))]


def load_ticker_events_csv(path: Union[str, Path]) -> list[TickerEvent]:
    """Ticker events from a CSV with columns security, date, ticker (any case): ``security`` traded as
    ``ticker`` from ``date``; ``security`` is the id the events endpoint is asked with."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    columns = _columns(raw)
    missing = [c for c in ("security", "date", "ticker") if c not in columns]
    if missing:
        raise ValueError(f"{path}: no column for {missing}")
    return [TickerEvent(row[columns["security"]].strip().upper(), to_date(row[columns["date"]]),
                        row[columns["ticker"]].strip().upper()) for _, row in raw.iterrows()]


def load_dividends_csv(path: Union[str, Path]) -> list[Dividend]:
    """Dividends from a CSV with columns ticker, ex_dividend_date, cash_amount and optional
    record_date, pay_date, declaration_date, frequency, distribution_type, currency (any case)."""
    raw = pd.read_csv(path)
    columns = _columns(raw)
    missing = [c for c in ("ticker", "ex_dividend_date", "cash_amount") if c not in columns]
    if missing:
        raise ValueError(f"{path}: no column for {missing}")

    def optional(row: pd.Series, name: str, convert: Callable[[object], object]) -> Optional[object]:
        value = row[columns[name]] if name in columns else None
        return None if value is None or pd.isna(value) else convert(value)

    return [Dividend(str(row[columns["ticker"]]).strip().upper(), to_date(row[columns["ex_dividend_date"]]),
                     float(row[columns["cash_amount"]]),
                     currency=optional(row, "currency", str) or "USD",
                     declaration_date=optional(row, "declaration_date", to_date),
                     record_date=optional(row, "record_date", to_date),
                     pay_date=optional(row, "pay_date", to_date),
                     frequency=optional(row, "frequency", int),
                     distribution_type=optional(row, "distribution_type", str) or "recurring")
            for _, row in raw.iterrows()]


def market_data_from_files(paths: Iterable[Union[str, Path]], splits: Optional[Union[str, Path]] = None,
                           dividends: Optional[Union[str, Path]] = None) -> MarketData:
    """One ``MarketData`` from several bar files (see ``load_market_file``), and optional
    splits and dividends files (``load_splits_csv``, ``load_dividends_csv``), all as traded."""
    frames, split_events, cash = [], [], []
    for path in paths:
        frame, found, paid = load_market_file(path)
        frames.append(frame)
        split_events += found
        cash += paid
    if splits is not None:
        split_events += load_splits_csv(splits)
    if dividends is not None:
        cash += load_dividends_csv(dividends)
    return MarketData(pd.concat(frames, ignore_index=True) if frames else None, split_events, dividends=cash)
